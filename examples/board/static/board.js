// The board page: the list is drawn from the initial tasks, then kept up to
// date by the TaskCreated, TaskUpdated and TaskDeleted events that the Task
// model broadcasts (with this page's own changes among them).
"use strict";

function startBoard(pusher, channelName, initial) {
  const $ = (selector) => document.querySelector(selector);
  const tasks = new Map();

  function draw(task) {
    let li = document.getElementById(`task-${task.id}`);
    if (!li) {
      li = document.createElement("li");
      li.id = `task-${task.id}`;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.addEventListener("change", () => send("POST", `/tasks/${task.id}`, { done: box.checked }));
      const title = document.createElement("span");
      title.className = "title";
      const remove = document.createElement("button");
      remove.className = "remove";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", "Delete");
      remove.addEventListener("click", () => send("DELETE", `/tasks/${task.id}`));
      li.append(box, " ", title, " ", remove);
      $("#tasks").append(li);
    }
    li.querySelector(".title").textContent = task.title;  // never innerHTML: user input
    li.querySelector("input").checked = task.done;
    li.dataset.done = String(task.done);
    tasks.set(task.id, task);
  }

  function send(method, url, body) {
    return fetch(url, {
      method,
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then((response) => {
      if (!response.ok) throw new Error(`${method} ${url}: ${response.status}`);
    });
  }

  initial.forEach(draw);

  pusher.connection.bind("state_change", ({ current }) => {
    $("#state").textContent = current;
    $("#state").dataset.state = current;
  });

  const channel = pusher.subscribe(channelName);
  channel.bind("pusher:subscription_succeeded", () => {
    document.body.dataset.subscribed = "true";
  });
  channel.bind("TaskCreated", ({ model }) => draw(model));
  channel.bind("TaskUpdated", ({ model }) => draw(model));
  channel.bind("TaskDeleted", ({ model }) => {
    tasks.delete(model.id);
    const li = document.getElementById(`task-${model.id}`);
    if (li) li.remove();
  });

  $("#new-task").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = event.target.elements.title;
    const title = input.value.trim();
    if (title) send("POST", "/tasks", { title }).then(() => (input.value = ""), console.error);
  });
}
