// The device check before joining: camera preview, camera and microphone choice, a level meter.

const EXPLANATIONS = {
  NotAllowedError:
    "The browser was not allowed to use your camera and microphone. Allow them (the icon in " +
    "the address bar) and reload, or join without them.",
  NotFoundError: "No camera or microphone was found. You can still join to see and hear the others.",
  NotReadableError:
    "Your camera or microphone is in use by another program. Close it and reload, or join without them.",
  OverconstrainedError: "The chosen device is not available any more; choose another.",
};

export class Devices {
  constructor({ preview, status, level, camera, microphone }) {
    this.preview = preview;
    this.status = status;
    this.level = level;
    this.camera = camera;
    this.microphone = microphone;
    this.stream = null;
    this.audio = null;
    this.settled = Promise.resolve();
    this.preferred = { camera: "", microphone: "" };
    camera.addEventListener("change", () => this.acquire());
    microphone.addEventListener("change", () => this.acquire());
  }

  // Devices to ask for when none is chosen on the page (a reload asks for those it had); if
  // they are gone, the browser's own choice.
  prefer(camera, microphone) {
    this.preferred = { camera: camera || "", microphone: microphone || "" };
  }

  start() {
    this.settled = this.acquire().then(() => this.list());
    return this.settled;
  }

  acquire() {
    // Joining waits for the camera that is starting, so nobody joins without one by a race.
    this.settled = this.open();
    return this.settled;
  }

  async open() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.status.textContent =
        "This browser cannot use a camera here (a secure https:// address is needed).";
      return;
    }
    this.release();
    const camera = this.camera.value;
    const microphone = this.microphone.value;
    const device = (chosen, preferred) =>
      chosen ? { deviceId: { exact: chosen } } : preferred ? { deviceId: { ideal: preferred } } : {};
    const constraints = {
      video: { ...device(camera, this.preferred.camera), width: { ideal: 640 }, height: { ideal: 360 } },
      audio: { ...device(microphone, this.preferred.microphone), echoCancellation: true, noiseSuppression: true },
    };
    try {
      this.stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (error) {
      try {
        // One of the two may still work: a camera without a microphone, or the reverse.
        this.stream = await navigator.mediaDevices.getUserMedia({ audio: constraints.audio });
      } catch {
        this.stream = null;
      }
      this.status.textContent = EXPLANATIONS[error.name] || `Your camera could not start (${error.name}).`;
    }
    if (this.stream) {
      this.preview.srcObject = this.stream;
      const video = this.stream.getVideoTracks()[0];
      const audio = this.stream.getAudioTracks()[0];
      if (video && audio) this.status.textContent = "Your camera and microphone work.";
      this.watchLevel();
    }
  }

  async list() {
    const all = await navigator.mediaDevices.enumerateDevices();
    const fill = (select, kind, fallback) => {
      const current = select.value || this.inUse(kind);
      const found = all.filter((d) => d.kind === kind);
      select.replaceChildren(
        ...found.map((d, i) => {
          const option = document.createElement("option");
          option.value = d.deviceId;
          option.textContent = d.label || `${fallback} ${i + 1}`;
          return option;
        }),
      );
      if (found.some((d) => d.deviceId === current)) select.value = current;
      select.disabled = found.length === 0;
    };
    fill(this.camera, "videoinput", "Camera");
    fill(this.microphone, "audioinput", "Microphone");
  }

  inUse(kind) {
    const track = this.stream && (kind === "videoinput" ? this.stream.getVideoTracks() : this.stream.getAudioTracks())[0];
    return track ? track.getSettings().deviceId : "";
  }

  watchLevel() {
    const track = this.stream.getAudioTracks()[0];
    if (!track || !window.AudioContext) return;
    this.audio = new AudioContext();
    const source = this.audio.createMediaStreamSource(new MediaStream([track]));
    const analyser = this.audio.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const context = this.audio;
    const tick = () => {
      if (this.audio !== context) return;
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const x of samples) sum += x * x;
      this.level.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
      requestAnimationFrame(tick);
    };
    tick();
  }

  // The stream goes to the call (once the devices asked for are settled); the preview stops
  // watching it.
  async handOver() {
    await this.settled.catch(() => {});
    const stream = this.stream;
    this.stream = null;
    this.stopLevel();
    return stream;
  }

  stopLevel() {
    if (this.audio) this.audio.close();
    this.audio = null;
  }

  release() {
    this.stopLevel();
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
  }

  stop() {
    this.release();
    this.preview.srcObject = null;
  }
}
