// In-call chat (docs/web.md, "Chat"): a panel with the call's messages, read out politely by
// screen readers, a toggle that counts what arrived while it was closed, and a box where Enter
// sends (Shift+Enter: a new line). Signaling numbers every message of a call; the list is kept
// in that order, whatever order the frames arrive in.

export const MAX_CHAT_LENGTH = 1000;

const $ = (id) => document.getElementById(id);
const clockTime = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

export class ChatPanel {
  // `send(text)`: hand a message to the signaling connection.
  constructor({ send }) {
    this.send = send;
    this.me = null;
    this.unread = 0;
    // Texts sent and not answered yet, oldest first: signaling answers one person's frames in
    // the order they came, each message with its own `chat` frame or an `error`.
    this.pending = [];
    this.restored = null; // what the box holds when refused texts were put back in it
    this.seen = new Set(); // message_ids shown (a frame is never shown twice)
    this.observed = window.antechamber || (window.antechamber = {});
    this.observed.chatMessages = 0; // chat frames received, for tests; nothing personal
    $("chat-text").maxLength = MAX_CHAT_LENGTH;
    $("chat-toggle").addEventListener("click", () => this.toggle());
    $("chat-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    $("chat-text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    $("chat-text").addEventListener("input", () => this.showLength());
  }

  // The welcome: who I am, and whether the clinic keeps this chat.
  welcome(frame) {
    this.me = frame.participant_id;
    const days = (frame.call && frame.call.chat_retention_days) || 0;
    $("chat-kept").textContent =
      days > 0
        ? `This chat is kept with the session for ${days} ${days === 1 ? "day" : "days"}.`
        : "Chat is not saved.";
  }

  get open() {
    return !$("chat").hidden;
  }

  toggle(open = !this.open) {
    $("chat").hidden = !open;
    $("chat-toggle").setAttribute("aria-expanded", String(open));
    if (open) {
      this.unread = 0;
      $("chat-text").focus();
    }
    this.showUnread();
  }

  showUnread() {
    const badge = $("chat-unread");
    badge.hidden = this.unread === 0;
    badge.textContent = String(this.unread);
    $("chat-toggle").setAttribute(
      "aria-label",
      this.unread > 0 ? `Chat, ${this.unread} unread` : this.open ? "Hide the chat" : "Chat",
    );
  }

  showLength() {
    const left = MAX_CHAT_LENGTH - $("chat-text").value.length;
    $("chat-length").textContent = left < 100 ? `${left} characters left` : "";
  }

  submit() {
    const text = $("chat-text").value.trim();
    if (!text) return;
    if (text.length > MAX_CHAT_LENGTH) {
      this.showError(`A message can be at most ${MAX_CHAT_LENGTH} characters.`);
      return;
    }
    this.pending.push(text);
    this.showError("");
    this.send(text);
    $("chat-text").value = "";
    this.showLength();
  }

  showError(text) {
    $("chat-error").textContent = text;
  }

  // A `chat` frame: everyone in the call gets it, the sender too (its confirmation).
  received(frame) {
    if (this.seen.has(frame.message_id)) return;
    this.seen.add(frame.message_id);
    this.observed.chatMessages += 1;
    const mine = frame.participant_id === this.me;
    if (mine) this.pending.shift();
    const item = document.createElement("li");
    item.className = mine ? "mine" : "";
    item.dataset.number = String(frame.number);
    const who = document.createElement("span");
    who.className = "chat-who";
    who.textContent = mine ? "You" : frame.sender_name;
    item.append(who);
    if (frame.role === "host") {
      const badge = document.createElement("span");
      badge.className = "badge host";
      badge.textContent = "host";
      item.append(" ", badge);
    }
    const when = document.createElement("time");
    when.dateTime = frame.sent_at;
    when.textContent = clockTime.format(new Date(frame.sent_at));
    item.append(" ", when);
    const text = document.createElement("p");
    text.className = "chat-text";
    text.textContent = frame.text;
    item.append(text);
    // In the call's order: before the first message numbered after this one.
    const list = $("chat-messages");
    const later = [...list.children].find((li) => Number(li.dataset.number) > frame.number);
    list.insertBefore(item, later || null);
    if (!later) list.scrollTop = list.scrollHeight;
    if (!mine && !this.open) {
      this.unread += 1;
      this.showUnread();
    }
  }

  // An `error` frame: the chat's own refusals are shown under the box, and the refused text
  // goes back in it (after other refused ones, never over what is being typed), so nothing
  // typed is lost; whether it was one of them.
  refused(frame) {
    const ours =
      frame.code.startsWith("chat_") || (frame.code === "not_in_call" && this.pending.length > 0);
    if (!ours) return false;
    this.showError(frame.message);
    const text = this.pending.shift();
    const box = $("chat-text");
    if (text && (!box.value || box.value === this.restored)) {
      box.value = box.value ? `${box.value}\n${text}` : text;
      this.restored = box.value;
      this.showLength();
    }
    return true;
  }
}
