// Talking to the waiting room (docs/web.md, "The waiting room's messages"). A waiting guest
// sees the hosts' messages in a list that screen readers read out (aria-live), and may answer
// in a short box when the clinic allows it, once a host has written. Hosts write from the call
// manager, to one guest (the Message button on their row) or to everyone waiting, picking one
// of the clinic's ready-made messages or their own words, and follow the whole conversation,
// every host's messages and every reply, in a log. Hosts also admit everyone at once and send
// a guest back to the waiting room from their row in the call.

const $ = (id) => document.getElementById(id);
const clockTime = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
// Refusals this part shows next to its own form instead of a toast.
const HOST_CODES = ["messages_too_fast", "empty_message"];
const GUEST_CODES = ["messages_too_fast", "empty_message", "replies_off", "no_host_in_call"];

export class WaitingRoomTalk {
  // `send(type, fields)`: a frame to signaling; `confirm(title, text, ok, message)`: the
  // page's dialog with a message box, resolving to the message or null.
  constructor({ send, confirm }) {
    this.send = send;
    this.confirm = confirm;
    this.role = null;
    this.canned = [];
    this.replies = false;
    this.names = new Map(); // waiting participant_id -> name, for the host's log
    this.seen = new Set(); // message_ids shown
    this.lastTarget = null; // what the host's form sent last, for its refusal
    this.observed = window.antechamber || (window.antechamber = {});
    this.observed.waitingMessages = 0; // waiting_message frames received; nothing personal
    $("wr-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    $("wr-canned").addEventListener("change", () => {
      if ($("wr-canned").value) $("wr-text").value = $("wr-canned").value;
    });
    $("waiting-reply").addEventListener("submit", (event) => {
      event.preventDefault();
      this.reply();
    });
    $("admit-all").addEventListener("click", () => this.send("admit_all"));
  }

  // The welcome: my role, and what the clinic allows (its canned messages, replies).
  welcome(frame) {
    this.role = frame.role;
    const call = frame.call || {};
    this.canned = call.waiting_messages || [];
    this.replies = Boolean(call.guest_replies);
    $("wr-canned").replaceChildren(
      option("", "Write my own"),
      ...this.canned.map((text) => option(text, text)),
    );
  }

  // The host's view of the room: who can be written to.
  room(frame) {
    const chosen = $("wr-to").value;
    for (const guest of frame.waiting) this.names.set(guest.participant_id, guest.display_name);
    $("wr-to").replaceChildren(
      option("", "Everyone waiting"),
      ...frame.waiting.map((guest) => option(guest.participant_id, guest.display_name)),
    );
    if ([...$("wr-to").options].some((o) => o.value === chosen)) $("wr-to").value = chosen;
    $("admit-all").hidden = frame.waiting.length < 2;
    $("wr-compose").hidden = frame.waiting.length === 0 && $("wr-log").children.length === 0;
  }

  // The Message button on a waiting guest's row: the form, addressed to them.
  guestAction(guest, button) {
    const b = button("Message", () => {
      $("wr-compose").hidden = false;
      $("wr-to").value = guest.participant_id;
      $("wr-text").focus();
    });
    b.setAttribute("aria-label", `Message ${guest.display_name}`);
    return b;
  }

  // "Back to waiting room" on a guest's row in the call (none for hosts: they cannot be).
  participantAction(person, button) {
    if (person.role !== "guest") return null;
    const b = button("Back to waiting room", async () => {
      const message = await this.confirm(
        `Send ${person.display_name} back to the waiting room?`,
        "Their video stops and they wait again; you can admit them again later.",
        "Send back",
        "I'll let you back in shortly.",
      );
      if (message !== null) {
        this.send("send_to_waiting_room", { participant_id: person.participant_id, message });
      }
    });
    b.setAttribute("aria-label", `Send ${person.display_name} back to the waiting room`);
    return b;
  }

  submit() {
    const text = $("wr-text").value.trim();
    $("wr-error").textContent = "";
    if (!text) {
      $("wr-error").textContent = "Write a message, or pick a ready-made one.";
      $("wr-text").focus();
      return;
    }
    this.lastTarget = $("wr-to").value || null;
    this.send("message_waiting", { participant_id: this.lastTarget, text });
    $("wr-text").value = "";
    $("wr-canned").value = "";
  }

  reply() {
    const text = $("waiting-reply-text").value.trim();
    $("waiting-reply-error").textContent = "";
    if (!text) return;
    this.send("reply_waiting", { text });
    $("waiting-reply-text").value = "";
  }

  // A waiting_message frame: to the guest's list, or to the hosts' log.
  received(frame) {
    if (this.seen.has(frame.message_id)) return;
    this.seen.add(frame.message_id);
    this.observed.waitingMessages += 1;
    const time = clockTime.format(new Date(frame.sent_at));
    const item = document.createElement("li");
    item.dataset.from = frame.from_role;
    if (this.role === "host") {
      const to =
        frame.from_role === "guest"
          ? `${frame.sender_name} replied`
          : `${frame.sender_name} to ${frame.participant_id ? this.names.get(frame.participant_id) || "a guest" : "everyone waiting"}`;
      item.append(line("meta", `${to}, ${time}`), line("text", frame.text));
      $("wr-log").append(item);
      $("wr-compose").hidden = false;
      return;
    }
    const who = frame.from_role === "guest" ? "You" : frame.sender_name;
    item.append(line("meta", `${who}, ${time}`), line("text", frame.text));
    $("waiting-messages").append(item);
    $("waiting-talk-title").hidden = false;
    if (frame.from_role === "host" && this.replies) $("waiting-reply").hidden = false;
  }

  // An error frame about this part: shown by its form (true), else left to the page.
  refused(frame) {
    if (this.role === "host" && HOST_CODES.includes(frame.code) && !$("wr-compose").hidden) {
      $("wr-error").textContent = frame.message;
      return true;
    }
    if (this.role === "guest" && GUEST_CODES.includes(frame.code)) {
      $("waiting-reply-error").textContent = frame.message;
      return true;
    }
    return false;
  }
}

function option(value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  return o;
}

function line(className, text) {
  const p = document.createElement("p");
  p.className = className;
  p.textContent = text;
  return p;
}
