// Screen sharing (docs/web.md, "Screen sharing"): a "Share screen" button (hosts; guests when
// the clinic allows it), the share shown large on a stage above the tiles for everyone, the
// browser's own "Stop sharing" ending it, and a host's "Stop share" for someone else's.
//
// The page picks a surface first (getDisplayMedia), then asks signaling (`start_screen_share`);
// once granted, the media node offers a mid for it (`screen_mid`, see media.js) and the share
// goes out as a second video track. Signaling's `screen_share` frame says who shares; the
// others' share arrives as the track the node's offer labels `screen`.

const $ = (id) => document.getElementById(id);

export class ScreenSharing {
  // `send(type, fields)`: a frame to signaling; `toast(sentence)`: tell the person.
  constructor({ send, toast }) {
    this.send = send;
    this.toast = toast;
    this.me = null;
    this.host = false;
    this.allowed = false;
    this.sharer = null; // participant_id of whoever shares, by signaling's word
    this.sharerName = "";
    this.local = null; // this page's screen track while it shares (or is about to)
    this.granted = false; // signaling said this page is the one sharing
    this.remote = null; // the others' share as it arrives
    this.observed = window.antechamber || (window.antechamber = {});
    // For tests: who shares and the size of the picture on the stage; nothing personal.
    this.observed.screenShare = () => {
      const video = $("screen-video");
      return {
        sharer: this.sharer,
        sharing: this.local !== null,
        shown: !$("screen-stage").hidden,
        width: video.videoWidth,
        height: video.videoHeight,
      };
    };
    $("share-toggle").addEventListener("click", () => (this.local ? this.stop() : this.start()));
    $("screen-stop").addEventListener("click", () => {
      if (this.sharer) this.send("stop_screen_share", { participant_id: this.sharer });
    });
  }

  // The welcome: who I am, whether I may share at all.
  welcome(frame) {
    this.me = frame.participant_id;
    this.host = frame.role === "host";
    this.allowed = this.host || Boolean(frame.call && frame.call.guest_screen_share);
    $("share-toggle").hidden = !this.allowed || !navigator.mediaDevices?.getDisplayMedia;
  }

  // The current screen track, for media.js to send on the mid the node offers.
  track() {
    return this.local;
  }

  async start() {
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (error) {
      if (error.name !== "NotAllowedError" && error.name !== "AbortError") {
        this.toast("Your screen could not be shared.");
      }
      return; // they cancelled the picker
    }
    const [track] = stream.getVideoTracks();
    if (!track) return;
    track.contentHint = "detail"; // text stays sharp rather than smooth
    track.addEventListener("ended", () => this.stop()); // the browser's own "Stop sharing"
    this.local = track;
    this.show();
    this.send("start_screen_share", {});
  }

  // Stop my own share (or forget a pick that signaling refused).
  stop() {
    const track = this.local;
    if (!track) return;
    this.local = null;
    track.stop();
    if (this.sharer === this.me) this.send("stop_screen_share", {});
    this.show();
  }

  // Signaling refused `start_screen_share`: the picked surface is let go, the reason shown.
  refused(frame) {
    if (!frame.code.startsWith("screen_share") && frame.code !== "not_sharing") return false;
    if (this.local && this.sharer !== this.me) {
      this.local.stop();
      this.local = null;
    }
    this.toast(frame.message);
    this.show();
    return true;
  }

  // Everyone in the call: who shares now.
  received(frame) {
    this.sharer = frame.participant_id;
    this.sharerName = frame.sender_name || "Someone";
    if (this.local && this.sharer !== this.me && this.sharer !== null) {
      // Someone else's share won (or a host stopped mine and another began): let mine go.
      this.local.stop();
      this.local = null;
    } else if (this.local && this.sharer === null && this.granted) {
      this.local.stop(); // a host stopped my share
      this.local = null;
      this.toast("Your screen share was stopped by the host.");
    }
    this.granted = this.sharer === this.me;
    if (this.granted && !this.local) {
      // Shared before a reload: the surface went with the old page, so the share ends.
      this.send("stop_screen_share", {});
    }
    this.show();
  }

  // The others' share, as the media connection reports it (null: none arriving).
  arrived(track) {
    this.remote = track;
    this.show();
  }

  show() {
    const mine = this.sharer !== null && this.sharer === this.me && this.local;
    const theirs = this.sharer !== null && this.sharer !== this.me ? this.remote : null;
    const track = mine ? this.local : theirs;
    const video = $("screen-video");
    const current = video.srcObject ? video.srcObject.getVideoTracks()[0] : null;
    if (track !== current) video.srcObject = track ? new MediaStream([track]) : null;
    $("screen-stage").hidden = !track;
    $("screen-label").textContent = mine
      ? "You are sharing your screen"
      : `${this.sharerName} is sharing their screen`;
    $("screen-stop").hidden = !(this.host && theirs);
    const toggle = $("share-toggle");
    toggle.textContent = this.local ? "Stop sharing" : "Share screen";
    toggle.setAttribute("aria-pressed", String(Boolean(this.local)));
  }

  // The call is over for this page.
  finish() {
    if (this.local) this.local.stop();
    this.local = null;
    this.remote = null;
    this.sharer = null;
    this.granted = false;
    this.show();
  }
}
