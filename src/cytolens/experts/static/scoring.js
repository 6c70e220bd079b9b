// Keys for the scoring page: 1..9 answer, Backspace or ← goes back to change the last answer.
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  if (form) {
    form.addEventListener("submit", function () {
      // One answer per click: a double click must not also answer the next image. Disabled after the
      // browser has read the pressed button's value.
      setTimeout(function () {
        form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    if (event.key === "Backspace" || event.key === "ArrowLeft") {
      var back = document.getElementById("back");
      if (back) { event.preventDefault(); back.click(); }
      return;
    }
    if (event.key === "ArrowRight" || event.key === "Escape") {
      var keep = document.getElementById("keep");
      if (keep) { event.preventDefault(); keep.click(); }
      return;
    }
    var button = form ? form.querySelector('button[data-key="' + event.key + '"]') : null;
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });
})();
