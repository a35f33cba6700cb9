// What the field tablet keeps on the device (IndexedDB), so that a network drop, a closed tab or a
// restarted tablet loses nothing: the queue of the agent's actions not yet answered by the server
// (each with its own id and the version of the order it was based on; photos as Blobs), and the last
// task list and team read, to work from without network. Without IndexedDB (a private window of some
// browsers) the same API runs in memory: the page still works, but a reload loses the queue.

const DB_NAME = "citypilot-tablet";
const DB_VERSION = 1;
const QUEUE = "queue";
const CACHE = "cache";

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function openDatabase() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(QUEUE)) db.createObjectStore(QUEUE, { keyPath: "id" });
      if (!db.objectStoreNames.contains(CACHE)) db.createObjectStore(CACHE, { keyPath: "key" });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error("the tablet's storage is held by another tab"));
  });
}

export class TabletStore {
  constructor(db) {
    this.db = db; // null: in memory
    this.memory = { [QUEUE]: new Map(), [CACHE]: new Map() };
    this.seq = Date.now() * 100;
  }

  static async open() {
    try {
      if (typeof indexedDB === "undefined") throw new Error("no IndexedDB");
      return new TabletStore(await openDatabase());
    } catch (err) {
      console.warn("IndexedDB unavailable: the queue is kept in memory only", err);
      return new TabletStore(null);
    }
  }

  get persistent() {
    return this.db !== null;
  }

  async _run(storeName, mode, work) {
    if (!this.db) return work(null, this.memory[storeName]);
    const tx = this.db.transaction(storeName, mode);
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error("aborted"));
    });
    const result = await work(tx.objectStore(storeName), null);
    await done;
    return result;
  }

  // A number that orders the queue (later actions get larger ones, across reloads).
  nextSeq() {
    this.seq = Math.max(this.seq + 1, Date.now() * 100);
    return this.seq;
  }

  // The queued items of a user, oldest first.
  async queue(user) {
    const all = await this._run(QUEUE, "readonly", (store, memory) => (store ? promised(store.getAll()) : [...memory.values()]));
    return all.filter((item) => item.user === user).sort((a, b) => a.seq - b.seq);
  }

  async put(item) {
    await this._run(QUEUE, "readwrite", (store, memory) => (store ? promised(store.put(item)) : memory.set(item.id, item)));
  }

  async putAll(items) {
    if (!items.length) return;
    await this._run(QUEUE, "readwrite", (store, memory) => {
      for (const item of items) {
        if (store) store.put(item);
        else memory.set(item.id, item);
      }
    });
  }

  async remove(id) {
    await this._run(QUEUE, "readwrite", (store, memory) => (store ? promised(store.delete(id)) : memory.delete(id)));
  }

  async get(key) {
    const row = await this._run(CACHE, "readonly", (store, memory) => (store ? promised(store.get(key)) : memory.get(key)));
    return row ? row.value : null;
  }

  async set(key, value) {
    const row = { key, value };
    await this._run(CACHE, "readwrite", (store, memory) => (store ? promised(store.put(row)) : memory.set(key, row)));
  }
}
