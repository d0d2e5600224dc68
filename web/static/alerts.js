// Knock alerts that reach a host whose tab is in the background (docs/web.md, "Knock
// alerts"): a short chime made with WebAudio (no audio file) and a desktop notification,
// again every N seconds while someone waits unattended. Unattended: waiting (not on hold),
// connected, and no host has turned to them since they began waiting (written to them, or
// sent them back): the room view's `attended`. Muted knocks (`knocks_muted`, automatic after
// the first admit) silence both. Each host chooses, in the call manager, kept in this
// browser's localStorage: sound on/off, notification on/off, repeat every 0 (never), 15, 30
// or 60 s. The notification permission is asked on the host's click, never on load.

const $ = (id) => document.getElementById(id);
const KEY = "antechamber.knock-alerts";
const DEFAULTS = { sound: true, desktop: true, repeat_s: 30 };
export const REPEATS = [0, 15, 30, 60];

function load() {
  try {
    const kept = JSON.parse(localStorage.getItem(KEY) || "null") || {};
    const settings = { ...DEFAULTS, ...kept };
    if (!REPEATS.includes(settings.repeat_s)) settings.repeat_s = DEFAULTS.repeat_s;
    return settings;
  } catch {
    return { ...DEFAULTS }; // storage switched off
  }
}

export class KnockAlerts {
  constructor() {
    this.settings = load();
    this.unattended = new Set(); // participant_ids waiting unattended
    this.alerted = new Set(); // those already alerted for at least once
    this.muted = false;
    this.timer = null;
    this.audio = null;
    this.observed = window.antechamber || (window.antechamber = {});
    this.observed.knockAlerts = 0; // alerts raised (sound and/or notification); nothing personal
    this.observed.knockNotifications = 0; // desktop notifications shown
    this.observed.knockChimes = 0; // chimes played
    this.showSettings();
    $("alert-sound").addEventListener("change", () => this.save({ sound: $("alert-sound").checked }));
    $("alert-desktop").addEventListener("change", () => {
      this.save({ desktop: $("alert-desktop").checked });
      if ($("alert-desktop").checked) this.askPermission(); // a click: the browser may ask
    });
    $("alert-repeat").addEventListener("change", () => this.save({ repeat_s: Number($("alert-repeat").value) }));
    $("alert-permission").addEventListener("click", () => this.askPermission());
    // WebAudio may only start after a click on the page: the host's first click anywhere.
    document.addEventListener("pointerdown", () => this.unlockAudio(), { once: true });
    document.addEventListener("keydown", () => this.unlockAudio(), { once: true });
  }

  save(change) {
    this.settings = { ...this.settings, ...change };
    try {
      localStorage.setItem(KEY, JSON.stringify(this.settings));
    } catch {
      // not kept: this page still uses it
    }
    this.showSettings();
    this.schedule();
  }

  showSettings() {
    $("alert-sound").checked = this.settings.sound;
    $("alert-desktop").checked = this.settings.desktop;
    $("alert-repeat").value = String(this.settings.repeat_s);
    const permission = "Notification" in window ? Notification.permission : "unsupported";
    $("alert-permission").hidden = permission !== "default" || !this.settings.desktop;
    $("alert-permission-state").textContent =
      permission === "denied"
        ? "This browser blocks notifications from this page; allow them in its site settings."
        : permission === "unsupported"
          ? "This browser cannot show desktop notifications."
          : "";
  }

  async askPermission() {
    if (!("Notification" in window) || Notification.permission !== "default") return;
    try {
      await Notification.requestPermission();
    } catch {
      // an old browser's callback form: the state shows what it decided
    }
    this.showSettings();
  }

  unlockAudio() {
    try {
      this.audio = this.audio || new AudioContext();
      if (this.audio.state === "suspended") this.audio.resume();
    } catch {
      this.audio = null; // no WebAudio: notifications only
    }
  }

  // The room view changed (hosts): who waits unattended, and whether knocks are muted.
  update(room) {
    this.muted = room.knocks_muted;
    this.unattended = new Set(
      room.waiting
        .filter((g) => !g.on_hold && !g.disconnected && !g.attended)
        .map((g) => g.participant_id),
    );
    for (const pid of this.alerted) if (!this.unattended.has(pid)) this.alerted.delete(pid);
    const fresh = [...this.unattended].some((pid) => !this.alerted.has(pid));
    if (fresh && !this.muted) this.alert();
    this.schedule();
  }

  schedule() {
    clearInterval(this.timer);
    this.timer = null;
    const every = this.settings.repeat_s;
    if (every > 0 && this.unattended.size > 0 && !this.muted) {
      this.timer = setInterval(() => this.alert(), every * 1000);
    }
  }

  alert() {
    if (this.muted || this.unattended.size === 0) return;
    for (const pid of this.unattended) this.alerted.add(pid);
    if (!this.settings.sound && !this.settings.desktop) return;
    this.observed.knockAlerts += 1;
    if (this.settings.sound) this.chime();
    if (this.settings.desktop) this.notify();
  }

  chime() {
    this.unlockAudio();
    const audio = this.audio;
    if (!audio) return;
    // Two soft sine notes, a fifth apart, each fading out: short and not alarming.
    const start = audio.currentTime + 0.01;
    for (const [i, frequency] of [659.25, 987.77].entries()) {
      const oscillator = audio.createOscillator();
      const gain = audio.createGain();
      oscillator.type = "sine";
      oscillator.frequency.value = frequency;
      const at = start + i * 0.18;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.25, at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.6);
      oscillator.connect(gain).connect(audio.destination);
      oscillator.start(at);
      oscillator.stop(at + 0.65);
    }
    this.observed.knockChimes += 1;
  }

  notify() {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const count = this.unattended.size;
    try {
      // No name: a desktop notification can be seen by anyone near the screen.
      const note = new Notification(count === 1 ? "Someone is waiting to join" : `${count} people are waiting to join`, {
        body: "Open the call to let them in.",
        tag: "antechamber-knock", // one at a time: a repeat replaces the last
        renotify: true,
      });
      note.onclick = () => {
        window.focus();
        note.close();
      };
      this.observed.knockNotifications += 1;
    } catch {
      // e.g. a mobile browser that shows notifications only from a service worker
    }
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.unattended.clear();
  }
}
