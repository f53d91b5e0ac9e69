// softserve's page for people: the "try it" form. It calls the public V2 inference API like
// any client, draws the probabilities as an SVG bar chart and shows the same request as curl.
// Served by softserve; no library, nothing fetched from elsewhere.
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var MOST_BARS = 20; // a model of more classes shows its 20 most probable

  function svg(tag, attributes, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function setup(form) {
    var main = document.getElementById("main");
    var base = main ? main.getAttribute("data-base") : "";
    var model = form.getAttribute("data-model");
    var labels = JSON.parse(form.getAttribute("data-labels"));
    var imputes = form.getAttribute("data-impute") === "true";
    var version = document.getElementById("try-version");
    var inputs = Array.prototype.slice.call(form.querySelectorAll("input[type=number]"));
    var result = document.getElementById("try-result");
    var error = document.getElementById("try-error");
    var curl = document.getElementById("try-curl");
    var copy = document.getElementById("try-copy");

    function path() {
      return base + "/v2/models/" + encodeURIComponent(model) + "/versions/" +
        encodeURIComponent(version.value) + "/infer";
    }

    function row() {
      return inputs.map(function (input) {
        if (input.value === "" && imputes) { return null; }
        return Number(input.value);
      });
    }

    function body() {
      var data = row();
      return JSON.stringify({inputs: [{name: "input", shape: [1, data.length], datatype: "FP32",
                                       data: data}]});
    }

    function showCurl() {
      var quoted = body().replace(/'/g, "'\\''");
      curl.textContent = "curl -s -X POST '" + window.location.origin + path() + "' \\\n" +
        "  -H 'Content-Type: application/json' \\\n  -d '" + quoted + "'";
    }

    function showError(text) {
      error.textContent = text;
      error.hidden = false;
      result.textContent = "";
    }

    function draw(probabilities) {
      var order = probabilities.map(function (p, i) { return i; });
      if (order.length > MOST_BARS) {
        order.sort(function (a, b) { return probabilities[b] - probabilities[a]; });
        order = order.slice(0, MOST_BARS);
      }
      var best = 0;
      probabilities.forEach(function (p, i) { if (p > probabilities[best]) { best = i; } });
      // drawn at the box's own width, so that its text stays readable on a phone
      var width = Math.max(280, Math.min(640, result.clientWidth || 640));
      var rowHeight = 24, labelWidth = Math.round(width * 0.3), barWidth = width - labelWidth - 64;
      var chart = svg("svg", {viewBox: "0 0 " + width + " " + (order.length * rowHeight + 6),
                              role: "img", "class": "probabilities",
                              "aria-label": "probability of each class"});
      chart.appendChild(svg("title", {}, "Probability of each class"));
      order.forEach(function (k, i) {
        var p = probabilities[k], y = i * rowHeight + 3;
        var group = svg("g", {"class": "class-bar", "data-label": labels[k],
                              "data-probability": String(p)});
        group.appendChild(svg("text", {x: labelWidth - 8, y: y + 15, "text-anchor": "end"},
                              labels[k]));
        group.appendChild(svg("rect", {x: labelWidth, y: y + 2, height: rowHeight - 6,
                                       width: Math.max(1, p * barWidth),
                                       "class": k === best ? "bar top" : "bar"}));
        group.appendChild(svg("text", {x: labelWidth + Math.max(1, p * barWidth) + 6,
                                       y: y + 15, "class": "value"}, p.toFixed(4)));
        chart.appendChild(group);
      });
      var caption = document.createElement("p");
      caption.id = "try-answer";
      caption.textContent = "Version " + version.value + " predicts " + labels[best] + " (" +
        (probabilities[best] * 100).toFixed(1) + "%)" +
        (probabilities.length > MOST_BARS ? "; the " + MOST_BARS + " most probable classes:" : ":");
      result.textContent = "";
      result.appendChild(caption);
      result.appendChild(chart);
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.reportValidity()) { return; }
      error.hidden = true;
      result.setAttribute("aria-busy", "true");
      fetch(path(), {method: "POST", headers: {"Content-Type": "application/json"}, body: body()})
        .then(function (response) {
          return response.json().then(function (answer) { return [response.status, answer]; });
        })
        .then(function (reply) {
          var status = reply[0], answer = reply[1];
          if (status !== 200) {
            showError("The server answered " + status + ": " + (answer.error || JSON.stringify(answer)));
            return;
          }
          var output = (answer.outputs || []).filter(function (o) { return o.name === "probabilities"; })[0];
          if (!output) { showError("The answer has no probabilities output."); return; }
          draw(output.data);
        })
        .catch(function (failure) { showError("The request failed: " + failure); })
        .then(function () { result.removeAttribute("aria-busy"); });
    });

    form.addEventListener("input", showCurl);
    version.addEventListener("change", showCurl);
    copy.addEventListener("click", function () {
      var done = function () { copy.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(curl.textContent).then(done, function () { select(); });
      } else {
        select();
      }
      function select() {
        var range = document.createRange();
        range.selectNodeContents(curl);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        copy.textContent = "Selected: press Ctrl+C";
      }
    });
    showCurl();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("try-form");
    if (form) { setup(form); }
  });
})();
