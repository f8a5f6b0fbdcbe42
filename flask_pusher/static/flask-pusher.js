/*! flask-pusher.js, part of Flask-Pusher (MIT licence).
 *
 * Adds the page's Pusher socket id as an X-Socket-ID header to same-origin
 * fetch() and XMLHttpRequest calls, as Laravel Echo's request interceptors do,
 * so that `pusher.trigger(..., to_others=True)` on the server leaves this page
 * out. Load it after pusher-js; it reads the socket id of the last connected
 * Pusher instance, or of the one given to FlaskPusher.use(pusher).
 */
(function (root) {
  'use strict';

  var HEADER = 'X-Socket-ID';
  var chosen = null;

  function socketId() {
    if (chosen) {
      return (chosen.connection && chosen.connection.socket_id) || null;
    }
    var instances = (root.Pusher && root.Pusher.instances) || [];
    for (var i = instances.length - 1; i >= 0; i--) {
      var connection = instances[i].connection;
      if (connection && connection.state === 'connected' && connection.socket_id) {
        return connection.socket_id;
      }
    }
    return null;
  }

  function sameOrigin(url) {
    if (!root.location || url === undefined || url === null) return false;
    try {
      return new URL(String(url), root.location.href).origin === root.location.origin;
    } catch (e) {
      return false;
    }
  }

  var originalFetch = root.fetch;
  if (typeof originalFetch === 'function') {
    root.fetch = function (input, init) {
      var id = socketId();
      var isRequest = typeof root.Request === 'function' && input instanceof root.Request;
      var url = isRequest ? input.url : input;
      if (id && sameOrigin(url)) {
        var headers = new root.Headers(
          (init && init.headers) || (isRequest ? input.headers : undefined)
        );
        if (!headers.has(HEADER)) {
          headers.set(HEADER, id);
          init = Object.assign({}, init, { headers: headers });
        }
      }
      return originalFetch.call(this, input, init);
    };
  }

  var XHR = root.XMLHttpRequest;
  if (typeof XHR === 'function') {
    var open = XHR.prototype.open;
    var send = XHR.prototype.send;
    var setRequestHeader = XHR.prototype.setRequestHeader;
    XHR.prototype.open = function (method, url) {
      this.__flaskPusherUrl = url;
      this.__flaskPusherHasHeader = false;
      return open.apply(this, arguments);
    };
    XHR.prototype.setRequestHeader = function (name) {
      if (String(name).toLowerCase() === HEADER.toLowerCase()) this.__flaskPusherHasHeader = true;
      return setRequestHeader.apply(this, arguments);
    };
    XHR.prototype.send = function () {
      var id = socketId();
      if (id && !this.__flaskPusherHasHeader && sameOrigin(this.__flaskPusherUrl)) {
        this.setRequestHeader(HEADER, id);
      }
      return send.apply(this, arguments);
    };
  }

  root.FlaskPusher = {
    header: HEADER,
    socketId: socketId,
    use: function (pusher) {
      chosen = pusher;
      return pusher;
    },
  };
})(typeof window !== 'undefined' ? window : globalThis);
