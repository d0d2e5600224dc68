// Recording consent (docs/web.md, "Recording consent"): the question a host's request to
// record asks this person (`consent_request`: an alert dialog, in the waiting room too; this
// page connects its media only once it is answered), how it was settled (`consent_closed`),
// and for hosts who has consented, declined or not answered yet (`consent_state`).

const STATUS_TITLES = {
  asking: "Asking everyone to consent",
  recording: "Recording",
  declined: "Declined",
  lapsed: "Not everyone answered",
  cancelled: "Request withdrawn",
  stopped: "Recording stopped",
};

export class RecordingConsent {
  // send(type, fields): a frame to signaling; toast(text): a passing message; elements: the
  // dialog with its text and buttons, and the hosts' panel with its status and lists.
  constructor({ send, toast, dialog, question, consentButton, declineButton, panel, panelTitle, panelStatus, lists }) {
    this.send = send;
    this.toast = toast;
    this.dialog = dialog;
    this.question = question;
    this.panel = panel;
    this.panelTitle = panelTitle;
    this.panelStatus = panelStatus;
    this.lists = lists; // { consented, declined, pending }: <ul> elements
    this.requestId = null; // the question open on this page
    this.returnFocus = null;
    this.waiters = []; // resolved once no question is open (media waits on it)
    this.hostState = null; // the hosts' latest consent_state
    consentButton.addEventListener("click", () => this.answer(true));
    declineButton.addEventListener("click", () => this.answer(false));
    // The question must be answered: Escape does not dismiss it (Tab reaches both buttons).
    dialog.addEventListener("cancel", (event) => event.preventDefault());
  }

  // A host's request asks this person (in the call or waiting).
  request(frame) {
    this.requestId = frame.request_id;
    this.question.textContent = frame.message;
    if (!this.dialog.open) {
      this.returnFocus = document.activeElement;
      this.dialog.showModal();
    }
    // Focus the answer that records nothing, so that a stray Enter does not consent.
    this.dialog.querySelector("[data-answer=decline]").focus();
  }

  answer(given) {
    if (!this.requestId) return;
    this.send("recording_consent", { request_id: this.requestId, given });
    this.close();
  }

  // The question is settled (answered here, or the request is over): say how it stands.
  closed(frame) {
    if (frame.request_id === this.requestId) this.close();
    if (frame.message) this.toast(frame.message);
  }

  close() {
    this.requestId = null;
    if (this.dialog.open) this.dialog.close();
    const back = this.returnFocus;
    this.returnFocus = null;
    if (back && back.isConnected && typeof back.focus === "function") back.focus();
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  // Resolves once no question is open on this page: an admitted person's media connects
  // only then, so nothing of them is recorded before they answered.
  answered() {
    if (!this.requestId) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  // An error frame; true if it was about consent (shown here).
  refused(frame) {
    if (!["consent_not_asked", "consent_pending", "consent_needed"].includes(frame.code)) return false;
    this.toast(frame.message);
    return true;
  }

  // --- hosts --------------------------------------------------------------------------------

  // A request waits for answers: the host's record button withdraws it.
  get asking() {
    return Boolean(this.hostState && this.hostState.status === "asking");
  }

  state(frame) {
    this.hostState = frame;
    this.panel.hidden = false;
    this.panelTitle.textContent = STATUS_TITLES[frame.status] || "Recording consent";
    this.panelStatus.textContent = frame.message;
    for (const [kind, list] of Object.entries(this.lists)) {
      list.replaceChildren(
        ...frame[kind].map((person) => {
          const item = document.createElement("li");
          item.dataset.participantId = person.participant_id;
          item.textContent = person.waiting ? `${person.display_name} (waiting room)` : person.display_name;
          return item;
        }),
      );
      list.closest("div").hidden = frame[kind].length === 0;
    }
    if (frame.status === "declined" || frame.status === "lapsed") this.toast(frame.message);
  }

  finish() {
    this.waiters = []; // the call is over: no media to connect
    this.requestId = null;
    if (this.dialog.open) this.dialog.close();
    this.hostState = null;
    this.panel.hidden = true;
  }
}
