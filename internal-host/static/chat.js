// The chat page's live part, with no framework and no build step: forms marked `data-fetch` are
// posted in the background (with the page's CSRF token, which they already carry), and the
// conversation's event stream appends what happens. Text is shown as plain text while it
// streams; every other event, and the end of a turn, swaps in the turn as the server renders it
// (Markdown made safe, trace rows, approval cards, charts). A reload or a dropped connection
// resumes from the last event seen (the browser sends Last-Event-ID), so nothing is lost.
(function () {
  'use strict';

  function messageOf(html, fallback) {
    var page = new DOMParser().parseFromString(html, 'text/html');
    var message = page.getElementById('error-message');
    return message ? message.textContent : fallback;
  }

  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!form.hasAttribute('data-fetch')) { return; }
    event.preventDefault();
    var status = form.querySelector('.form-status');
    var buttons = form.querySelectorAll('button');
    buttons.forEach(function (button) { button.disabled = true; });
    if (status) { status.textContent = 'Sending…'; }
    fetch(form.action, {
      method: 'POST',
      body: new URLSearchParams(new FormData(form)),
      credentials: 'same-origin'
    }).then(function (response) {
      return response.text().then(function (text) {
        if (!response.ok) {
          throw new Error(messageOf(text, 'The request failed (' + response.status + ').'));
        }
        var target = new URL(response.url);
        if (target.pathname !== window.location.pathname) {
          window.location.assign(target.pathname);
          return;
        }
        if (status) { status.textContent = ''; }
        var question = form.querySelector('textarea[name="question"]');
        if (question) { question.value = ''; }
      });
    }).catch(function (error) {
      if (status) { status.textContent = error.message; } else { window.alert(error.message); }
    }).then(function () {
      buttons.forEach(function (button) { button.disabled = false; });
    });
  });

  var conversation = document.getElementById('conversation');
  if (!conversation || !window.EventSource) { return; }
  var turns = document.getElementById('turns');
  var base = conversation.getAttribute('data-url');
  // Per turn: whether a fragment is being fetched, and the events that arrived meanwhile.
  var pending = {};

  function turnElement(turnId) { return document.getElementById('turn-' + turnId); }

  function refresh(turnId) {
    var state = pending[turnId] || (pending[turnId] = { busy: false, queue: [] });
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    state.again = false;
    fetch(base + '/turns/' + turnId, { credentials: 'same-origin' }).then(function (response) {
      if (!response.ok) { throw new Error('status ' + response.status); }
      return response.text();
    }).then(function (html) {
      var holder = document.createElement('div');
      holder.innerHTML = html; // server-rendered and sanitised
      var fresh = holder.firstElementChild;
      var old = turnElement(turnId);
      if (old) { old.replaceWith(fresh); } else { turns.appendChild(fresh); }
    }).catch(function () {
      // The next event, or a reload, brings the turn back.
    }).then(function () {
      state.busy = false;
      var queued = state.queue;
      state.queue = [];
      if (state.again) { refresh(turnId); }
      queued.forEach(handle);
    });
  }

  function handle(data) {
    var state = pending[data.turn_id];
    if (state && state.busy) { state.queue.push(data); return; }
    var turn = turnElement(data.turn_id);
    if (!turn) { refresh(data.turn_id); return; }
    if (data.sequence <= Number(turn.getAttribute('data-last-sequence'))) { return; }
    if (data.event.kind === 'text') {
      var live = turn.querySelector('.live-text');
      if (!live) {
        live = document.createElement('div');
        live.className = 'answer live-text';
        turn.querySelector('.items').appendChild(live);
      }
      live.textContent += data.event.text;
      turn.setAttribute('data-last-sequence', String(data.sequence));
      return;
    }
    refresh(data.turn_id);
  }

  var after = conversation.getAttribute('data-last-sequence') || '0';
  var source = new EventSource(base + '/events?after=' + encodeURIComponent(after));
  source.onmessage = function (message) {
    try { handle(JSON.parse(message.data)); } catch (error) { /* a malformed event is skipped */ }
  };
})();
