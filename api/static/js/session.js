// The sign-in panel and the signed-in header, shared by the listing page and the admin console.

import { ApiError, SESSION_EXPIRED, api, clearSession, getToken, signIn } from "./api.js";
import { $, h, say } from "./dom.js";

export const EXPIRED_MESSAGE = "Your session expired, please sign in again.";

/**
 * Wire the page's #signin panel, #signout button and #whoami label.
 * `onSignedIn(user)` renders the signed-in page; `onSignedOut()` hides it.
 */
export function initSession({ onSignedIn, onSignedOut }) {
  const panel = $("#signin");
  const form = $("#signin-form");
  const message = $("#signin-message");
  const signOutButton = $("#signout");
  const whoami = $("#whoami");

  function showSignIn(text = "", kind = "info") {
    onSignedOut();
    whoami.textContent = "";
    signOutButton.hidden = true;
    panel.hidden = false;
    say(message, text, kind);
    form.querySelector("button[type=submit]").disabled = false;
    $("#signin-username").focus();
  }

  function enter(user) {
    panel.hidden = true;
    say(message, "");
    form.reset();
    whoami.replaceChildren(user.username, h("span", { class: "who-role" }, ` (${user.role})`));
    signOutButton.hidden = false;
    onSignedIn(user);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    submit.disabled = true;
    say(message, "Signing in…");
    try {
      enter(await signIn(username, password));
    } catch (error) {
      clearSession();
      say(message, error instanceof ApiError ? error.detail : String(error), "error");
      form.elements.password.select();
    } finally {
      submit.disabled = false;
    }
  });

  signOutButton.addEventListener("click", () => {
    clearSession();
    showSignIn("You are signed out.");
  });

  window.addEventListener(SESSION_EXPIRED, () => showSignIn(EXPIRED_MESSAGE, "error"));

  (async () => {
    if (!getToken()) {
      showSignIn();
      return;
    }
    try {
      enter(await api("/users/me"));
    } catch (error) {
      if (error.status === 401) return; // the session-expired event already showed the panel
      clearSession();
      showSignIn(error instanceof ApiError ? error.detail : String(error), "error");
    }
  })();

  return { showSignIn };
}
