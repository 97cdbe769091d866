// The sign-in panel and the signed-in header, shared by the listing page and the admin console.

import { ApiError, SESSION_EXPIRED, api, clearSession, getToken, signIn } from "./api.js";
import { $, h, say } from "./dom.js";
import { t, waitText } from "./i18n.js";

/** What a seller (or an admin) is told when the API refuses or fails: never a raw API message. */
export function friendlyError(error) {
  if (!(error instanceof ApiError)) return t("error.generic");
  if (error.status === 0) return t("error.unreachable");
  if (error.status === 403 && /inactive/i.test(error.detail)) return t("error.inactive");
  if (error.status === 413) return t("error.too_large");
  if (error.status === 429) return t("error.rate", { wait: waitText(error.retryAfter || 60) });
  if (error.unavailable) return t("error.unavailable");
  return t("error.generic");
}

function signInError(error) {
  if (!(error instanceof ApiError)) return t("error.generic");
  if (error.status === 401) return t("error.credentials");
  if (error.status === 429) return t("error.lockout", { wait: waitText(error.retryAfter || 300) });
  if (error.status === 503 && error.retryAfter) return t("error.busy", { wait: waitText(error.retryAfter) });
  return friendlyError(error);
}

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
  let user = null;

  function showSignIn(text = "", kind = "info") {
    user = null;
    onSignedOut();
    whoami.textContent = "";
    signOutButton.hidden = true;
    panel.hidden = false;
    say(message, text, kind);
    form.querySelector("button[type=submit]").disabled = false;
    $("#signin-username").focus();
  }

  function showWho() {
    if (user) whoami.replaceChildren(user.username, h("span", { class: "who-role" }, ` (${t(`role.${user.role}`)})`));
  }

  function enter(signedIn) {
    user = signedIn;
    panel.hidden = true;
    say(message, "");
    form.reset();
    showWho();
    signOutButton.hidden = false;
    onSignedIn(user);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    submit.disabled = true;
    say(message, t("signin.pending"));
    try {
      enter(await signIn(username, password));
    } catch (error) {
      clearSession();
      say(message, signInError(error), "error");
      form.elements.password.select();
    } finally {
      submit.disabled = false;
    }
  });

  signOutButton.addEventListener("click", () => {
    clearSession();
    showSignIn(t("signout.done"));
  });

  window.addEventListener(SESSION_EXPIRED, () => showSignIn(t("session.expired"), "error"));

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
      showSignIn(signInError(error), "error");
    }
  })();

  return { showSignIn, refresh: showWho };
}
