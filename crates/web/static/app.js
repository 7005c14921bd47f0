// Tessera's only script: a job page follows its job live over server-sent
// events. Without it the page refreshes itself (a <noscript> meta refresh).
(function () {
  "use strict";

  function follow(section) {
    var id = section.getAttribute("data-job");
    var status = document.getElementById("job-status");
    var announce = document.getElementById("job-announce");
    var actions = document.getElementById("job-actions");
    var result = document.getElementById("job-result");
    if (!id || !status || !result || typeof EventSource === "undefined") {
      return;
    }
    var source = new EventSource("/jobs/" + encodeURIComponent(id) + "/events");
    source.addEventListener("update", function (event) {
      var update;
      try {
        update = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      // The markup comes from the site's own templates, escaped there.
      status.innerHTML = update.status;
      section.setAttribute("data-state", update.state);
      // Announced once per change of state, not at every percent.
      if (announce && announce.textContent !== update.label) {
        announce.textContent = update.label;
      }
      if (!update.done) {
        // A text reply as far as it is written, or nothing yet.
        result.innerHTML = update.result;
      } else {
        source.close();
        section.setAttribute("data-live", "false");
        if (actions) {
          actions.innerHTML = "";
        }
        result.innerHTML = update.result;
        var heading = result.querySelector("h2");
        if (heading) {
          heading.setAttribute("tabindex", "-1");
          heading.focus();
        }
      }
    });
    // EventSource reconnects by itself after a dropped connection; a job
    // page left open while the site restarts picks up where it was.
  }

  function start() {
    var section = document.getElementById("job");
    if (section && section.getAttribute("data-live") === "true") {
      follow(section);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
