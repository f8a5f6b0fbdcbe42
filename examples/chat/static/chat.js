// The chat page. Every channel name here is authorized by realtime.py, and every
// event the server sends is triggered by a view in views.py.
"use strict";

function startChat(pusher, { me, urls }) {
  const $ = (selector) => document.querySelector(selector);
  const color = (hue) => `hsl(${hue} 60% 40%)`;

  // Append a line to a list: an optional coloured name, then the text.
  // textContent, never innerHTML: messages are user input.
  function addLine(list, text, { who, hue, data = {} } = {}) {
    const li = document.createElement("li");
    if (who) {
      const b = document.createElement("b");
      b.textContent = who;
      if (hue !== undefined) b.style.color = color(hue);
      li.append(b, " ");
    }
    li.append(text);
    Object.assign(li.dataset, data);
    $(list).append(li);
    li.scrollIntoView({ block: "nearest" });
    return li;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then((response) => {
      if (!response.ok) throw new Error(`POST ${url}: ${response.status}`);
    });
  }

  // Submit a form's "text" with send(text), then clear it.
  function onSubmit(form, send) {
    $(form).addEventListener("submit", (event) => {
      event.preventDefault();
      const input = event.target.elements.text;
      const text = input.value.trim();
      if (text) send(text).then(() => (input.value = ""), console.error);
    });
  }

  pusher.connection.bind("state_change", ({ current }) => {
    $("#state").textContent = current;
    $("#state").dataset.state = current;
  });

  // Room messages: a POST, then the server triggers "message" on the public room.
  const room = pusher.subscribe("room");
  room.bind("message", ({ from, text, hue }) => {
    addLine("#messages", text, { who: from, hue });
    typing.delete(from);
    showTyping();
  });
  onSubmit("#message-form", (text) => {
    lastTyped = 0; // the message ends the typing: the next keystroke says so again
    return post(urls.messages, { text });
  });

  // Presence: who is online. Each member's id is their name (realtime.py).
  const presence = pusher.subscribe("presence-room");
  presence.bind("pusher:subscription_succeeded", (members) => {
    $("#members").replaceChildren();
    members.each(addMember);
  });
  presence.bind("pusher:member_added", addMember);
  presence.bind("pusher:member_removed", removeMember);

  function addMember({ id, info }) {
    if ($(`#members [data-user="${id}"]`)) return;
    addLine("#members", id === me ? " (you)" : "", {
      who: id,
      hue: info.hue,
      data: { user: id },
    });
    if (id !== me) openDirectMessages(id);
  }

  function removeMember({ id }) {
    $(`#members [data-user="${id}"]`)?.remove();
    closeDirectMessages(id);
  }

  // "typing...": a client event on the presence channel, at most one every 2 s,
  // and {typing: false} at once when the text is cleared, so that it goes away.
  // Client events go from browser to browser through Pusher, not through Flask.
  const typing = new Map(); // name -> timer that hides it
  let lastTyped = 0;
  $("#message-form input").addEventListener("input", (event) => {
    if (!presence.subscribed) return;
    if (!event.target.value.trim()) {
      if (lastTyped) presence.trigger("client-typing", { typing: false });
      lastTyped = 0;
    } else if (Date.now() - lastTyped > 2000) {
      presence.trigger("client-typing", { typing: true });
      lastTyped = Date.now();
    }
  });
  presence.bind("client-typing", (data, metadata) => {
    const who = metadata.user_id;
    clearTimeout(typing.get(who));
    if (data && data.typing === false) {
      typing.delete(who);
      showTyping();
      return;
    }
    typing.set(
      who,
      setTimeout(() => {
        typing.delete(who);
        showTyping();
      }, 3000),
    );
    showTyping();
  });
  function showTyping() {
    const names = [...typing.keys()];
    $("#typing").textContent = names.length
      ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…`
      : "";
  }

  // Direct messages: one private channel per pair of users, which only those
  // two may join (realtime.can_subscribe). Its name sorts the two names.
  const dmChannelName = (other) => `private-dm-${[me, other].sort().join("-")}`;

  function openDirectMessages(other) {
    const channel = pusher.subscribe(dmChannelName(other));
    channel.unbind_all(); // someone who left and came back: bind once
    channel.bind("message", ({ from, to, text }) => {
      addLine("#dm-log", text, { who: `${from} → ${to}` });
    });
    // Offer the recipient once the channel is open, so that no message is missed.
    channel.bind("pusher:subscription_succeeded", () => {
      if (!$(`#dm-to option[value="${other}"]`)) $("#dm-to").append(new Option(other, other));
      showRecipients();
    });
  }

  function closeDirectMessages(other) {
    pusher.unsubscribe(dmChannelName(other));
    $(`#dm-to option[value="${other}"]`)?.remove();
    showRecipients();
  }

  // With nobody to write to, the recipient list says so and the form is off.
  function showRecipients() {
    const nobody = !$('#dm-to option:not([value=""])');
    $('#dm-to option[value=""]')?.remove();
    if (nobody) $("#dm-to").prepend(new Option("Nobody else is online", "", true, true));
    for (const field of $("#dm-form").elements) field.disabled = nobody;
  }
  showRecipients();
  onSubmit("#dm-form", (text) => post(urls.dm, { to: $("#dm-to").value, text }));

  // Encrypted room: pusher-js (with-encryption build) decrypts with the key the
  // auth endpoint gives it; Pusher's servers relay only ciphertext.
  const secret = pusher.subscribe("private-encrypted-room");
  secret.bind("message", ({ from, text }) => addLine("#secret-log", text, { who: from }));
  onSubmit("#secret-form", (text) => post(urls.secret, { text }));

  // Notifications: signin makes this connection the user `me`, so that
  // pusher.send_to_user(me, ...) on the server reaches it.
  pusher.user.bind("notification", ({ text }) => addLine("#notifications", text));
  pusher.signin();
  pusher.user.signinDonePromise.then(() => {
    const channel = pusher.user.serverToUserChannel; // null if signin failed
    if (!channel) return;
    const welcome = () => post(urls.welcome, {}).catch(console.error);
    if (channel.subscribed) welcome();
    else channel.bind("pusher:subscription_succeeded", welcome);
  });

  // Activity log: the server records webhooks and triggers each entry on the
  // "activity" channel; the entries so far come from GET urls.activity.
  function showActivity({ id, time, name, channel, user_id }) {
    if ($(`#activity [data-id="${id}"]`)) return;
    const li = addLine("#activity", ` ${channel}${user_id ? ` · ${user_id}` : ""}`, {
      who: `${time} ${name}`,
      data: { id, event: name },
    });
    const later = [...$("#activity").children].find((other) => +other.dataset.id > id);
    if (later) later.before(li);
  }
  const activity = pusher.subscribe("activity");
  activity.bind("activity", showActivity);
  activity.bind("pusher:subscription_succeeded", () => {
    fetch(urls.activity)
      .then((response) => response.json())
      .then((entries) => entries.forEach(showActivity), console.error);
  });
}
