// Tollgate console: the only script the console runs. It asks the
// browser's WebAuthn API to create or use a passkey and posts what the
// authenticator returned; the gateway checks everything. No framework,
// no request to any host but the gateway that served the page.
"use strict";

(function () {
  function b64url(buf) {
    const bytes = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function unb64url(text) {
    const s = text.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(s + "===".slice((s.length + 3) % 4));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function say(text, isError) {
    const m = document.getElementById("message");
    if (!m) return;
    m.textContent = text;
    m.hidden = false;
    m.className = isError ? "error" : "ok";
  }

  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { json = null; }
    if (!r.ok) {
      throw new Error(json && json.detail ? json.detail : r.status + " " + r.statusText);
    }
    return json;
  }

  async function enroll(button) {
    const d = button.dataset;
    const cred = await navigator.credentials.create({
      publicKey: {
        rp: { id: d.rpId, name: "Tollgate" },
        user: { id: unb64url(d.userId), name: d.reviewer, displayName: d.reviewer },
        challenge: unb64url(d.challenge),
        pubKeyCredParams: [
          { type: "public-key", alg: -7 },
          { type: "public-key", alg: -8 },
        ],
        authenticatorSelection: { residentKey: "required", userVerification: "required" },
        attestation: "none",
        timeout: 120000,
      },
    });
    const done = await post("/console/enroll", {
      invite: d.invite,
      credential_id: b64url(cred.rawId),
      client_data: b64url(cred.response.clientDataJSON),
      attestation_object: b64url(cred.response.attestationObject),
    });
    location.assign(done.next);
  }

  function assertionOf(cred) {
    return {
      credential_id: b64url(cred.rawId),
      authenticator_data: b64url(cred.response.authenticatorData),
      client_data: b64url(cred.response.clientDataJSON),
      signature: b64url(cred.response.signature),
    };
  }

  async function signin(button) {
    const d = button.dataset;
    const cred = await navigator.credentials.get({
      publicKey: { challenge: unb64url(d.challenge), rpId: d.rpId, userVerification: "required", timeout: 120000 },
    });
    const body = assertionOf(cred);
    body.challenge = d.challenge;
    body.next = d.next;
    const done = await post("/console/signin", body);
    location.assign(done.next);
  }

  async function decide(form, verdict) {
    const id = form.dataset.approval;
    const reason = document.getElementById("reason").value;
    const prepared = await post("/console/approvals/" + id + "/prepare", { verdict: verdict, reason: reason });
    const cred = await navigator.credentials.get({
      publicKey: {
        challenge: unb64url(prepared.challenge),
        rpId: prepared.rp_id,
        allowCredentials: [{ type: "public-key", id: unb64url(prepared.credential_id) }],
        userVerification: "required",
        timeout: 120000,
      },
    });
    const done = await post("/console/approvals/" + id + "/decide", {
      payload: prepared.payload,
      assertion: assertionOf(cred),
    });
    say("Recorded: the approval is " + done.status.replace("_", " ") + ".", false);
    setTimeout(function () { location.reload(); }, 600);
  }

  function guard(fn) {
    return function (event) {
      event.preventDefault();
      const target = event.currentTarget;
      target.disabled = true;
      fn(target).catch(function (e) {
        say(e.message || String(e), true);
        target.disabled = false;
      });
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    const e = document.getElementById("enroll");
    if (e) e.addEventListener("click", guard(enroll));
    const s = document.getElementById("signin");
    if (s) s.addEventListener("click", guard(signin));
    const form = document.getElementById("decide");
    if (form) {
      form.querySelectorAll("button[data-verdict]").forEach(function (b) {
        b.addEventListener("click", guard(function (button) {
          if (!document.getElementById("reason").value.trim()) {
            return Promise.reject(new Error("Give a reason: the agent and the ledger see it."));
          }
          return decide(form, button.dataset.verdict);
        }));
      });
    }
  });
})();
