// French and English strings. The language comes from a saved choice, else the browser's; the
// switch in the header toggles it. Elements with data-i18n="key" get the string as their text,
// data-i18n-title / data-i18n-label / data-i18n-placeholder set those attributes.

const STRINGS = {
  en: {
    app_title: "citypilot control room",
    login_heading: "Control room",
    login_username: "User name",
    login_password: "Password",
    login_submit: "Log in",
    login_failed: "Login failed",
    logout: "Log out",
    lang_switch: "Français",
    lang_switch_title: "Passer en français",
    assets_drawn: "assets",
    layers: "Layers",
    layers_title: "Show or hide a layer",
    alarms: "Alarms",
    events: "Events",
    kpi: "KPIs",
    kpi_title: "Key performance indicators",
    close: "Close",
    mute: "Sound on",
    muted: "Sound off",
    mute_title: "Beep on critical alarms",
    live_connected: "live",
    live_connecting: "connecting…",
    live_lost: "feed lost, reconnecting…",
    map_unavailable: "The map cannot be drawn in this browser (no WebGL): the alarms and sheets still work.",
    filter_domain: "Domain",
    filter_commune: "Commune",
    filter_severity: "Min. severity",
    filter_all: "All",
    filter_shelved: "Shelved",
    no_alarms: "No open alarm matches.",
    no_events: "No event yet.",
    more_alarms: "Showing the first {n}: narrow the filters.",
    act_acknowledge: "Ack",
    act_acknowledge_title: "Acknowledge (a cleared alarm is closed)",
    act_clear: "Clear",
    act_clear_title: "Clear by hand, with a reason",
    act_shelve: "Shelve",
    act_shelve_title: "Shelve for a while, with a reason",
    act_unshelve: "Unshelve",
    act_comment: "Comment",
    act_submit: "Send",
    act_cancel: "Cancel",
    reason: "Reason",
    minutes: "Minutes",
    comment_text: "Comment",
    not_allowed: "Your role may not act on alarms",
    count_times: "×{n}",
    shelved_until: "shelved until {t}",
    sheet: "Asset",
    sheet_state: "Live state",
    sheet_attributes: "Attributes",
    sheet_history: "History",
    sheet_chart: "Last 24 h",
    sheet_commands: "Commands",
    sheet_no_history: "No journal entry.",
    sheet_no_state: "Never reported.",
    sheet_no_series: "No reading in the last 24 h.",
    sheet_loading: "Loading…",
    sheet_not_found: "This asset cannot be shown.",
    commands_later: "coming with remote management",
    f_id: "Identifier",
    f_kind: "Kind",
    f_commune: "Commune",
    f_status: "Status",
    f_service: "Service",
    f_address: "Address",
    f_connectivity: "Connectivity",
    f_last_seen: "Last heard",
    f_reported: "Reported",
    kpi_availability_domain: "Equipment availability by domain",
    kpi_availability_commune: "Equipment availability by commune",
    kpi_alarms_severity: "Open alarms by severity",
    kpi_alarms_domain: "Open alarms by domain",
    kpi_mtta: "Mean time to acknowledge (7 days)",
    kpi_open: "open",
    kpi_unack: "unacknowledged",
    kpi_shelved: "shelved",
    kpi_acknowledged: "acknowledged",
    kpi_availability_note: "Online among the assets that report (never heard from: {n}).",
    kpi_loading: "Loading…",
    kpi_energy: "Street lighting energy",
    kpi_energy_so_far: "today so far",
    kpi_energy_day: "that day",
    kpi_energy_before_led: "Same day before LED (estimate)",
    kpi_energy_saving: "Saving",
    kpi_energy_note: "Metered by {cabinets} cabinets; before-LED power known for {lights} lights.",
    kpi_none: "none",
    error: "Error",
    critical_banner: "{n} critical alarm(s) unacknowledged",
    domain_lighting: "Lighting",
    domain_traffic: "Traffic",
    domain_transport: "Transport",
    domain_vehicles: "Service vehicles",
    domain_access: "Access",
    domain_information: "Information",
    domain_parking: "Parking",
    domain_environment: "Environment",
    domain_public_safety: "Public safety",
    domain_operations: "Operations",
    domain_alarms: "Open alarms",
    domain_communes: "Commune names",
    sev_critical: "critical",
    sev_major: "major",
    sev_minor: "minor",
    sev_warning: "warning",
    state_raised: "raised",
    state_acknowledged: "acknowledged",
    state_cleared: "cleared",
    state_closed: "closed",
    conn_online: "online",
    conn_offline: "offline",
    conn_unreachable: "unreachable",
    conn_never: "never heard from",
    legend: "Legend",
  },
  fr: {
    app_title: "citypilot — poste de supervision",
    login_heading: "Poste de supervision",
    login_username: "Identifiant",
    login_password: "Mot de passe",
    login_submit: "Se connecter",
    login_failed: "Échec de la connexion",
    logout: "Se déconnecter",
    lang_switch: "English",
    lang_switch_title: "Switch to English",
    assets_drawn: "équipements",
    layers: "Couches",
    layers_title: "Afficher ou masquer une couche",
    alarms: "Alarmes",
    events: "Événements",
    kpi: "Indicateurs",
    kpi_title: "Indicateurs de performance",
    close: "Fermer",
    mute: "Son activé",
    muted: "Son coupé",
    mute_title: "Bip sur les alarmes critiques",
    live_connected: "en direct",
    live_connecting: "connexion…",
    live_lost: "flux perdu, reconnexion…",
    map_unavailable: "La carte ne peut pas être dessinée dans ce navigateur (pas de WebGL) : les alarmes et les fiches restent utilisables.",
    filter_domain: "Domaine",
    filter_commune: "Commune",
    filter_severity: "Gravité min.",
    filter_all: "Toutes",
    filter_shelved: "Mises en attente",
    no_alarms: "Aucune alarme ouverte ne correspond.",
    no_events: "Aucun événement pour l'instant.",
    more_alarms: "Les {n} premières seulement : affinez les filtres.",
    act_acknowledge: "Acquitter",
    act_acknowledge_title: "Acquitter (une alarme retombée est close)",
    act_clear: "Effacer",
    act_clear_title: "Effacer à la main, avec un motif",
    act_shelve: "En attente",
    act_shelve_title: "Mettre en attente un moment, avec un motif",
    act_unshelve: "Reprendre",
    act_comment: "Commenter",
    act_submit: "Envoyer",
    act_cancel: "Annuler",
    reason: "Motif",
    minutes: "Minutes",
    comment_text: "Commentaire",
    not_allowed: "Votre rôle ne permet pas d'agir sur les alarmes",
    count_times: "×{n}",
    shelved_until: "en attente jusqu'à {t}",
    sheet: "Équipement",
    sheet_state: "État en direct",
    sheet_attributes: "Caractéristiques",
    sheet_history: "Historique",
    sheet_chart: "Dernières 24 h",
    sheet_commands: "Commandes",
    sheet_no_history: "Aucune entrée au journal.",
    sheet_no_state: "N'a jamais émis.",
    sheet_no_series: "Aucune mesure ces dernières 24 h.",
    sheet_loading: "Chargement…",
    sheet_not_found: "Cet équipement ne peut pas être affiché.",
    commands_later: "arrive avec la gestion à distance",
    f_id: "Identifiant",
    f_kind: "Type",
    f_commune: "Commune",
    f_status: "Statut",
    f_service: "Service",
    f_address: "Adresse",
    f_connectivity: "Connectivité",
    f_last_seen: "Dernier contact",
    f_reported: "Mesuré",
    kpi_availability_domain: "Disponibilité des équipements par domaine",
    kpi_availability_commune: "Disponibilité des équipements par commune",
    kpi_alarms_severity: "Alarmes ouvertes par gravité",
    kpi_alarms_domain: "Alarmes ouvertes par domaine",
    kpi_mtta: "Délai moyen d'acquittement (7 jours)",
    kpi_open: "ouvertes",
    kpi_unack: "non acquittées",
    kpi_shelved: "en attente",
    kpi_acknowledged: "acquittées",
    kpi_availability_note: "En ligne parmi les équipements qui émettent (jamais entendus : {n}).",
    kpi_loading: "Chargement…",
    kpi_energy: "Énergie de l'éclairage public",
    kpi_energy_so_far: "aujourd'hui jusqu'ici",
    kpi_energy_day: "ce jour-là",
    kpi_energy_before_led: "Même jour avant LED (estimation)",
    kpi_energy_saving: "Économie",
    kpi_energy_note: "Mesurée par {cabinets} armoires ; puissance d'avant LED connue pour {lights} points lumineux.",
    kpi_none: "aucune",
    error: "Erreur",
    critical_banner: "{n} alarme(s) critique(s) non acquittée(s)",
    domain_lighting: "Éclairage",
    domain_traffic: "Circulation",
    domain_transport: "Transports",
    domain_vehicles: "Véhicules de service",
    domain_access: "Accès",
    domain_information: "Information",
    domain_parking: "Stationnement",
    domain_environment: "Environnement",
    domain_public_safety: "Sécurité publique",
    domain_operations: "Exploitation",
    domain_alarms: "Alarmes ouvertes",
    domain_communes: "Noms des communes",
    sev_critical: "critique",
    sev_major: "majeure",
    sev_minor: "mineure",
    sev_warning: "avertissement",
    state_raised: "active",
    state_acknowledged: "acquittée",
    state_cleared: "retombée",
    state_closed: "close",
    conn_online: "en ligne",
    conn_offline: "hors ligne",
    conn_unreachable: "injoignable",
    conn_never: "jamais entendu",
    legend: "Légende",
  },
};

const STORAGE_KEY = "citypilot.lang";
const listeners = [];
let current = initialLanguage();

function initialLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    // storage may be disabled: fall back to the browser's language
  }
  if (saved === "fr" || saved === "en") return saved;
  const wanted = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
  return wanted.toLowerCase().startsWith("fr") ? "fr" : "en";
}

export function lang() {
  return current;
}

export function t(key, params) {
  let text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (params) {
    for (const name in params) text = text.replace(`{${name}}`, String(params[name]));
  }
  return text;
}

export function applyTranslations(root = document) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  document.title = t("app_title");
}

export function setLanguage(next) {
  if (next !== "fr" && next !== "en") return;
  current = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // not kept across visits then
  }
  applyTranslations();
  for (const listener of listeners) listener(next);
}

export function onLanguageChange(listener) {
  listeners.push(listener);
}

// Dates as the control room reads them: the time alone today, the date too otherwise.
const formats = {};
export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date().toDateString() === date.toDateString();
  const key = `${current}:${today}`;
  formats[key] ??= new Intl.DateTimeFormat(current === "fr" ? "fr-FR" : "en-GB", today
    ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
    : { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" });
  return formats[key].format(date);
}

export function formatNumber(value, digits = 1) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  return value.toLocaleString(current === "fr" ? "fr-FR" : "en-GB", { maximumFractionDigits: digits });
}

export function formatDuration(seconds) {
  if (seconds == null) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${formatNumber(seconds / 3600, 1)} h`;
}
