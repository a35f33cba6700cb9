// A short two-tone beep for a critical alarm, synthesised with WebAudio (no audio file). Browsers
// allow sound only after a user gesture: the context is created on the first click or key press.

let context = null;
let muted = false;
let lastBeep = 0;

export function armSound() {
  const arm = () => {
    if (!context) {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (Context) context = new Context();
    }
    if (context && context.state === "suspended") context.resume();
  };
  window.addEventListener("pointerdown", arm, { once: true, capture: true });
  window.addEventListener("keydown", arm, { once: true, capture: true });
}

export function setMuted(value) {
  muted = value;
}

export function isMuted() {
  return muted;
}

export function beep() {
  const now = Date.now();
  if (muted || !context || context.state !== "running" || now - lastBeep < 3000) return;
  lastBeep = now;
  const start = context.currentTime;
  for (const [offset, frequency] of [[0, 880], [0.18, 660]]) {
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.type = "sine";
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.25, start + offset + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.15);
    oscillator.connect(gain).connect(context.destination);
    oscillator.start(start + offset);
    oscillator.stop(start + offset + 0.16);
  }
}
