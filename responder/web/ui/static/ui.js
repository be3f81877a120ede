// responder's web page: the API token for this tab, the approve / reject / cancel buttons, and
// reloading the page while work runs. Served as a file: the page's CSP allows no inline script.
"use strict";

const TOKEN_KEY = "responder-api-token";
const STATUS_KEY = "responder-action-status"; // what a button did, shown again after the reload

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function say(message) {
  document.getElementById("action-status").textContent = message;
}

function showToken() {
  const has = token() !== "";
  document.getElementById("token-form").hidden = has;
  document.getElementById("token-saved").hidden = !has;
  for (const button of document.querySelectorAll("button.action")) {
    button.disabled = !has;
  }
}

async function act(button) {
  const secret = token();
  if (!secret) {
    say("Enter the API token first.");
    return;
  }
  const { job, action } = button.dataset;
  if (!/^[0-9]+$/.test(job) || !["approve", "reject", "cancel"].includes(action)) {
    return;
  }
  button.disabled = true;
  try {
    // The token goes only in this header, to our own origin; never in a URL.
    const answer = await fetch(`/jobs/${job}/${action}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${secret}` },
      credentials: "omit",
    });
    const body = await answer.json().catch(() => ({}));
    if (answer.ok) {
      const sent = `Job ${job}: ${action} sent (now ${body.status}).`;
      say(sent);
      sessionStorage.setItem(STATUS_KEY, sent);
      setTimeout(() => location.reload(), 500);
    } else {
      say(`Job ${job}: ${action} refused (${answer.status}: ${body.error || "error"}).`);
      if (answer.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        showToken();
      }
    }
  } catch (error) {
    say(`Job ${job}: ${action} failed (${error}).`);
  } finally {
    button.disabled = token() === "";
  }
}

function typing() {
  const active = document.activeElement;
  return active !== null && active.tagName === "INPUT";
}

function start() {
  if (document.getElementById("login-failed")) {
    sessionStorage.removeItem(TOKEN_KEY);
  }
  document.getElementById("token-form").addEventListener("submit", () => {
    // The form then posts the token to /ui/login, which answers with the session cookie.
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
  });
  document.getElementById("token-saved").addEventListener("submit", () => {
    sessionStorage.removeItem(TOKEN_KEY);
  });
  for (const button of document.querySelectorAll("button.action")) {
    button.addEventListener("click", () => act(button));
  }
  showToken();
  say(sessionStorage.getItem(STATUS_KEY) || "");
  sessionStorage.removeItem(STATUS_KEY);
  const every = Number(document.body.dataset.refresh);
  if (every > 0) {
    // Reload while work runs; not while the operator is typing the token.
    setInterval(() => {
      if (!typing()) {
        location.reload();
      }
    }, every * 1000);
  }
}

document.addEventListener("DOMContentLoaded", start);
