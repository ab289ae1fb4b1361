// Starts Swagger UI on /docs. A file of its own, not an inline script, so the page's
// Content-Security-Policy can refuse every inline script.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  // The document is in the page as a JSON data block: the page may fetch nothing at all
  // (connect-src 'none'), so no script in it can ask the broker for a token.
  var spec = JSON.parse(document.getElementById("openapi").textContent);
  window.ui = SwaggerUIBundle({
    spec: spec,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    displayOperationId: true,
    // No "Try it out": a request from this page would be same-origin, so it could send the
    // guard header and read a token, which is what the header exists to stop.
    supportedSubmitMethods: [],
    tryItOutEnabled: false,
    // The validator badge is an image from a third-party site.
    validatorUrl: null,
    deepLinking: false,
    persistAuthorization: false,
  });
});
