// The demo console: the demo clinic's sessions and links, and the mails the sink received.

const $ = (id) => document.getElementById(id);
const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const KIND_LABELS = {
  session: "Client's session link",
  guest: "Guest link (to share)",
  drop_in: "Attendee's drop-in link",
  client_room: "Client room",
  practitioner_room: "Practitioner's room",
};
const REFRESH_MS = 5000;

function toast(text) {
  $("toast").textContent = text;
  setTimeout(() => ($("toast").textContent = ""), 4000);
}

async function getJson(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function linkRow(label, url, extra = "") {
  const row = document.createElement("div");
  row.className = "link";
  const name = document.createElement("span");
  name.textContent = extra ? `${label} (${extra})` : label;
  const open = document.createElement("a");
  open.href = url;
  open.target = "_blank";
  open.rel = "noopener noreferrer";
  open.textContent = "Open";
  open.setAttribute("aria-label", `Open the ${label.toLowerCase()} in a new tab`);
  const copy = document.createElement("button");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy the ${label.toLowerCase()}`);
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(url);
      toast("Link copied.");
    } catch {
      window.prompt("Copy this link:", url);
    }
  });
  const code = document.createElement("code");
  code.textContent = url;
  row.append(name, open, copy, code);
  return row;
}

function renderOverview(overview) {
  $("clinic").textContent = overview.clinic.name;
  const practitioner = $("practitioner-links");
  practitioner.replaceChildren();
  if (overview.host_url) practitioner.append(linkRow("Practitioner's host link", overview.host_url));
  if (overview.room_url) practitioner.append(linkRow("Practitioner's room link", overview.room_url));
  $("sessions").replaceChildren(
    ...overview.sessions.map((session) => {
      const row = document.createElement("tr");
      row.dataset.sessionId = session.session_id;
      const time = document.createElement("td");
      time.textContent = `${when.format(new Date(session.starts_at))} – ${new Date(session.ends_at).toLocaleTimeString([], { timeStyle: "short" })}`;
      const status = document.createElement("td");
      status.textContent = `${session.status}; guests ${session.guest_admission === "direct" ? "enter directly" : "wait"}`;
      const links = document.createElement("td");
      if (session.host_url) links.append(linkRow("Host link", session.host_url));
      for (const link of session.links) {
        const label = KIND_LABELS[link.kind] || link.kind;
        links.append(linkRow(label, link.url, link.state === "active" ? "" : link.state));
      }
      row.append(time, status, links);
      return row;
    }),
  );
  $("sessions-empty").hidden = overview.sessions.length > 0;
  if (overview.mail_url) {
    $("mail-sink").replaceChildren("Every mail is kept by the local mail sink: ");
    const a = document.createElement("a");
    a.href = overview.mail_url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = overview.mail_url;
    $("mail-sink").append(a);
  } else {
    $("mail-sink").textContent = "Mail goes to the mail server in the environment, not shown here.";
  }
}

function renderMails(mails) {
  $("mails").replaceChildren(
    ...mails.map((mail) => {
      const row = document.createElement("tr");
      const received = document.createElement("td");
      received.textContent = when.format(new Date(mail.received_at));
      const to = document.createElement("td");
      to.textContent = mail.to.join(", ");
      const subject = document.createElement("td");
      const a = document.createElement("a");
      a.href = mail.view_url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = mail.subject || "(no subject)";
      subject.append(a);
      row.append(received, to, subject);
      return row;
    }),
  );
  $("mails-empty").hidden = mails.length > 0;
}

async function refresh() {
  try {
    const [overview, mails] = await Promise.all([
      getJson("/demo/api/overview"),
      getJson("/demo/api/mails"),
    ]);
    renderOverview(overview);
    renderMails(mails);
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("updated").textContent = `Not updated: ${error.message}`;
  }
}

$("new-session").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("new-session-status").textContent = "Scheduling…";
  try {
    await getJson("/demo/api/sessions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ guest_admission: $("admission").value }),
    });
    $("new-session-status").textContent = "Scheduled; its links appear below in a moment.";
    setTimeout(refresh, 1000);
  } catch (error) {
    $("new-session-status").textContent = `Not scheduled: ${error.message}`;
  }
});

refresh();
setInterval(refresh, REFRESH_MS);
