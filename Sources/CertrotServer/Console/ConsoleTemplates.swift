// The operator console's pages (mustache, rendered on the server; no build step, no external assets). The page
// contract that Tests/console/console_test.py drives: `main#fleet`, `main#risk`, `main#campaign[data-campaign]`
// with `#campaign-state`, `.wave#wave-N[data-size][data-verified][data-sent][data-failed]`, `#token`, `#pause`,
// `#resume`, `#abort`, `#action-status`; `form#device-search` with `#q`, `#device-results a.device`;
// `main#device[data-device]`.
enum ConsoleTemplates {
    static let all: [String: String] = [
        "head": head, "foot": foot, "fleet": fleet, "risk": risk, "campaigns": campaigns, "campaign": campaign,
        "devices": devices, "device": device, "stacked": stacked, "bars": bars,
    ]

    static let head = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · certrot</title>
        <link rel="icon" href="data:,">
        <style>
        :root { --ink: #1b1f24; --muted: #4a5361; --line: #d0d5dd; --bg: #ffffff; --panel: #f5f7fa;
          --ok: #1a7f37; --busy: #0b5cad; --bad: #b42318; --wait: #6b7280; --warn: #9a6700; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
          background: var(--bg); }
        header { background: #12263f; color: #fff; }
        nav { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; align-items: center; max-width: 1200px;
          margin: 0 auto; padding: .6rem 1rem; }
        nav a { color: #fff; text-decoration: none; padding: .2rem 0; }
        nav a:hover, nav a:focus-visible { text-decoration: underline; }
        nav .brand { font-weight: 700; margin-right: .75rem; }
        main { max-width: 1200px; margin: 0 auto; padding: 1rem; }
        h1 { font-size: 1.5rem; margin: .25rem 0 1rem; }
        h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
        a { color: var(--busy); }
        :focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
        .cards { display: flex; flex-wrap: wrap; gap: .75rem; }
        .card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .6rem .9rem;
          min-width: 9rem; }
        .card b { display: block; font-size: 1.4rem; }
        .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1rem; }
        .panel { border: 1px solid var(--line); border-radius: 6px; padding: .75rem; min-width: 0; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
        th { color: var(--muted); font-weight: 600; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        svg { display: block; width: 100%; }
        svg.stack { height: 28px; border-radius: 4px; }
        svg.chart { height: 190px; }
        svg text { font: 4px system-ui, sans-serif; fill: var(--ink); }
        .legend { display: flex; flex-wrap: wrap; gap: .25rem .9rem; margin: .4rem 0 0; padding: 0; list-style: none;
          color: var(--muted); font-size: .9rem; }
        .sw { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .3em;
          vertical-align: -.05em; }
        .s-verified, .s-active { fill: var(--ok); background: var(--ok); }
        .s-in_sync { fill: #6fbf82; background: #6fbf82; }
        .s-pending, .s-sent, .s-applied, .s-issued { fill: var(--busy); background: var(--busy); }
        .s-failed, .s-rejected, .s-timed_out, .s-revoked { fill: var(--bad); background: var(--bad); }
        .s-waiting, .s-cancelled { fill: var(--wait); background: var(--wait); }
        .bar { fill: var(--busy); }
        .bar.hot { fill: var(--bad); }
        .state { display: inline-block; padding: .05rem .5rem; border-radius: 999px; background: var(--panel);
          border: 1px solid var(--line); font-weight: 600; }
        .wave { margin: .6rem 0; }
        .wave .track { display: flex; height: 1.1rem; background: #e5e7eb; border-radius: 4px; overflow: hidden; }
        .wave .track span { display: block; height: 100%; transition: width .4s; }
        .seg-verified { background: var(--ok); } .seg-sent { background: var(--busy); }
        .seg-failed { background: var(--bad); }
        .controls { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin: 1rem 0; }
        .controls label { display: block; font-size: .9rem; color: var(--muted); }
        input, button { font: inherit; padding: .35rem .6rem; border: 1px solid #8a94a6; border-radius: 4px; }
        button { background: #12263f; color: #fff; border-color: #12263f; cursor: pointer; }
        button.secondary { background: #fff; color: #12263f; }
        #action-status { min-height: 1.5em; color: var(--muted); }
        #action-status.error { color: var(--bad); }
        .muted { color: var(--muted); }
        footer { max-width: 1200px; margin: 2rem auto 1rem; padding: 0 1rem; color: var(--muted); font-size: .85rem; }
        </style>
        </head>
        <body>
        <header><nav aria-label="Console">
        <a class="brand" href="/">certrot</a>
        <a href="/">Fleet</a><a href="/risk">Stranded risk</a><a href="/campaigns">Campaigns</a><a href="/devices">Devices</a>
        </nav></header>

        """

    static let foot = """
        <footer>certrot console · {{generated}} · the same data as <a href="/api/v1/fleet">/api/v1</a> (docs/openapi.yaml)</footer>
        </body>
        </html>

        """

    /// A stacked bar of counts by state, and its legend: `{label, total, segments: [{state, count, x, width}]}`.
    static let stacked = """
        <svg class="stack" viewBox="0 0 100 6" preserveAspectRatio="none" role="img" aria-label="{{label}}: {{#segments}}{{state}} {{count}}; {{/segments}}">
        <title>{{label}}</title>
        {{#segments}}<rect class="s-{{state}}" x="{{x}}" y="0" width="{{width}}" height="6"></rect>{{/segments}}
        </svg>
        <ul class="legend">{{#segments}}<li><span class="sw s-{{state}}"></span>{{state}} {{count}}</li>{{/segments}}</ul>

        """

    /// A bar chart: `{label, width, bars: [{x, y, height, value, name, hot}]}` in a 0…width × 0…60 box.
    static let bars = """
        <svg class="chart" viewBox="0 0 {{width}} 62" preserveAspectRatio="xMinYMax meet" role="img" aria-label="{{label}}">
        <title>{{label}}</title>
        {{#bars}}<rect class="bar{{#hot}} hot{{/hot}}" x="{{x}}" y="{{y}}" width="{{barWidth}}" height="{{height}}"><title>{{name}}: {{value}}</title></rect>
        <text x="{{labelX}}" y="{{valueY}}" text-anchor="middle">{{value}}</text>
        <text x="{{labelX}}" y="61" text-anchor="middle">{{name}}</text>{{/bars}}
        </svg>

        """

    static let fleet = """
        {{> head}}
        <main id="fleet">
        <h1>Fleet</h1>
        <div class="cards">
        <div class="card">devices<b>{{devices}}</b></div>
        <div class="card">campaigns running<b>{{running}}</b></div>
        <div class="card"><a href="/risk">stranded risk</a><b>{{stranded}}</b></div>
        <div class="card">signing key<b title="{{kid}}">{{kidShort}}</b></div>
        </div>
        <h2>Rotation state by target</h2>
        <div class="grid">
        {{#targets}}<section class="panel" aria-labelledby="t-{{id}}">
        <h3 id="t-{{id}}">{{name}} <span class="muted">tag {{tag}}</span></h3>
        {{#chart}}{{> stacked}}{{/chart}}
        </section>{{/targets}}
        </div>
        {{#hasClientCerts}}<h2>Client certificates by policy</h2>
        <div class="grid">
        {{#clientCerts}}<section class="panel" aria-labelledby="c-{{id}}">
        <h3 id="c-{{id}}">{{name}} <span class="muted">issuer {{issuer}}</span></h3>
        {{#chart}}{{> stacked}}{{/chart}}
        {{#certificates}}{{> stacked}}{{/certificates}}
        </section>{{/clientCerts}}
        </div>{{/hasClientCerts}}
        <h2>Days left on the chain each device holds</h2>
        <div class="grid">
        {{#expiry}}<section class="panel" aria-labelledby="e-{{id}}">
        <h3 id="e-{{id}}">{{name}}</h3>
        {{#chart}}{{> bars}}{{/chart}}
        </section>{{/expiry}}
        </div>
        <h2>Campaigns</h2>
        <div class="scroll"><table>
        <thead><tr><th>campaign</th><th>state</th><th class="num">devices</th><th>created</th></tr></thead>
        <tbody>{{#campaigns}}<tr><td><a href="/campaigns/{{id}}">{{name}}</a> <span class="muted">{{id}}</span></td><td>{{state}}</td><td class="num">{{total}}</td><td>{{created}}</td></tr>{{/campaigns}}
        {{^campaigns}}<tr><td colspan="4" class="muted">none yet</td></tr>{{/campaigns}}</tbody>
        </table></div>
        </main>
        {{> foot}}
        """

    static let risk = """
        {{> head}}
        <main id="risk">
        <h1>Stranded risk</h1>
        <p>Devices whose last contact is longer ago than the time left on the chain they hold: unless they come back
        sooner than they have been away, they will not get its successor before it expires. Expired chains count too.</p>
        <div class="cards">{{#targets}}<div class="card">{{name}}<b>{{atRisk}}</b><span class="muted">{{expired}} expired</span></div>{{/targets}}</div>
        <div class="grid">
        {{#targets}}<section class="panel" aria-labelledby="r-{{id}}">
        <h2 id="r-{{id}}">{{name}}: at risk by week until expiry</h2>
        {{#chart}}{{> bars}}{{/chart}}
        </section>{{/targets}}
        </div>
        <h2>The first to expire</h2>
        <div class="scroll"><table>
        <thead><tr><th>device</th><th>target</th><th>expires</th><th class="num">days left</th><th>last contact</th><th class="num">days away</th></tr></thead>
        <tbody>{{#devices}}<tr><td><a href="{{deviceHref}}">{{device}}</a></td><td>{{target}}</td><td>{{expires}}</td><td class="num">{{daysLeft}}</td><td>{{lastSeen}}</td><td class="num">{{daysAway}}</td></tr>{{/devices}}
        {{^devices}}<tr><td colspan="6" class="muted">no device at risk</td></tr>{{/devices}}</tbody>
        </table></div>
        </main>
        {{> foot}}
        """

    static let campaigns = """
        {{> head}}
        <main id="campaigns">
        <h1>Campaigns</h1>
        <div class="scroll"><table>
        <thead><tr><th>campaign</th><th>state</th><th>origin</th><th class="num">devices</th><th>created</th></tr></thead>
        <tbody>{{#campaigns}}<tr><td><a href="/campaigns/{{id}}">{{name}}</a> <span class="muted">{{id}}</span></td><td>{{state}}</td><td>{{origin}}</td><td class="num">{{total}}</td><td>{{created}}</td></tr>{{/campaigns}}
        {{^campaigns}}<tr><td colspan="5" class="muted">none yet</td></tr>{{/campaigns}}</tbody>
        </table></div>
        </main>
        {{> foot}}
        """

    static let campaign = """
        {{> head}}
        <main id="campaign" data-campaign="{{id}}">
        <h1>{{name}} <span class="muted">{{id}}</span></h1>
        <p>State <span class="state" id="campaign-state">{{state}}</span> · {{kind}} · {{total}} devices ·
        <span id="campaign-eta">{{eta}}</span></p>
        <h2>Waves</h2>
        <div id="waves">
        {{#waves}}<div class="wave" id="wave-{{number}}" data-size="{{size}}" data-verified="{{verified}}" data-sent="{{sent}}" data-failed="{{failed}}">
        <div class="label">Wave {{number}} <span class="muted wave-state">{{state}}</span> · <span class="wave-counts">{{verified}} verified, {{sent}} in flight, {{failed}} failed of {{size}}</span></div>
        <div class="track" role="progressbar" aria-label="wave {{number}} verified" aria-valuemin="0" aria-valuemax="{{size}}" aria-valuenow="{{verified}}">
        <span class="seg-verified" style="width: {{verifiedPct}}%"></span><span class="seg-sent" style="width: {{sentPct}}%"></span><span class="seg-failed" style="width: {{failedPct}}%"></span>
        </div></div>{{/waves}}
        </div>
        <div class="controls">
        <div><label for="token">HTTP token (kept in this tab only)</label><input id="token" type="password" autocomplete="off"></div>
        <button id="pause" type="button">Pause</button>
        <button id="resume" type="button" class="secondary">Resume</button>
        <button id="abort" type="button" class="secondary">Abort</button>
        </div>
        <p id="action-status" role="status" aria-live="polite"></p>
        <h2>Failures by reason</h2>
        <div class="scroll"><table>
        <thead><tr><th>reason</th><th class="num">devices</th><th>for example</th></tr></thead>
        <tbody id="failures">{{#failures}}<tr><td>{{reason}}</td><td class="num">{{count}}</td><td><a href="{{exampleHref}}">{{example}}</a></td></tr>{{/failures}}
        {{^failures}}<tr><td colspan="3" class="muted">none</td></tr>{{/failures}}</tbody>
        </table></div>
        </main>
        <script src="/console/campaign.js" integrity="\(Console.campaignScriptIntegrity)"></script>
        {{> foot}}
        """

    static let devices = """
        {{> head}}
        <main id="devices">
        <h1>Devices</h1>
        <form id="device-search" method="get" action="/devices" role="search">
        <label for="q">Device ID or its beginning</label>
        <input id="q" name="q" value="{{q}}" autocomplete="off" spellcheck="false">
        <button type="submit">Search</button>
        </form>
        {{#searched}}<h2>{{count}} device(s){{#more}}, more after these{{/more}}</h2>
        <ul id="device-results">{{#results}}<li><a class="device" href="{{deviceHref}}">{{device}}</a> <span class="muted">last seen {{lastSeen}}</span></li>{{/results}}</ul>
        {{^results}}<p class="muted">no device starts with that</p>{{/results}}{{/searched}}
        </main>
        {{> foot}}
        """

    static let device = """
        {{> head}}
        <main id="device" data-device="{{device}}">
        <h1>{{shown}}</h1>
        <p>First seen {{firstSeen}} · last seen {{lastSeen}} · seq issued {{issuedSeq}}, reported {{reportedSeq}}</p>
        <h2>Inventory</h2>
        <div class="scroll"><table>
        <thead><tr><th class="num">tag</th><th class="num">type</th><th>credential</th><th>expires</th><th>sha256</th></tr></thead>
        <tbody>{{#inventory}}<tr><td class="num">{{tag}}</td><td class="num">{{type}}</td><td>{{name}}</td><td>{{expires}}</td><td class="muted">{{sha}}</td></tr>{{/inventory}}
        {{^inventory}}<tr><td colspan="5" class="muted">no inventory yet</td></tr>{{/inventory}}</tbody>
        </table></div>
        <h2>Rotations</h2>
        <div class="scroll"><table>
        <thead><tr><th>target</th><th>state</th><th class="num">attempts</th><th>updated</th><th>last error</th></tr></thead>
        <tbody>{{#rotations}}<tr><td>{{target}}</td><td><span class="sw s-{{state}}"></span>{{state}}</td><td class="num">{{attempts}}</td><td>{{updated}}</td><td>{{lastError}}</td></tr>{{/rotations}}
        {{^rotations}}<tr><td colspan="5" class="muted">none: it holds every target</td></tr>{{/rotations}}</tbody>
        </table></div>
        {{#hasIssued}}<h2>Issued certificates</h2>
        <div class="scroll"><table>
        <thead><tr><th>policy</th><th>serial</th><th class="num">tag</th><th>state</th><th>valid until</th></tr></thead>
        <tbody>{{#issued}}<tr><td>{{policy}}</td><td>{{serial}}</td><td class="num">{{tag}}</td><td>{{state}}</td><td>{{until}}</td></tr>{{/issued}}</tbody>
        </table></div>{{/hasIssued}}
        <h2>History</h2>
        <div class="scroll"><table>
        <thead><tr><th>when</th><th>target</th><th>state</th><th>detail</th></tr></thead>
        <tbody>{{#history}}<tr><td>{{when}}</td><td>{{target}}</td><td>{{state}}</td><td>{{detail}}</td></tr>{{/history}}</tbody>
        </table></div>
        </main>
        {{> foot}}
        """

    /// The campaign page's script (live waves; pause, resume and abort with the operator's token), served as
    /// `/console/campaign.js` so that the pages' CSP allows no inline script (red-team #32, finding 9).
    static let campaignScript = """
        (function () {
          "use strict";
          var id = document.getElementById("campaign").dataset.campaign;
          var api = "/api/v1/campaigns/" + encodeURIComponent(id);
          var token = document.getElementById("token");
          var status = document.getElementById("action-status");
          token.value = sessionStorage.getItem("certrot-token") || "";
          token.addEventListener("change", function () { sessionStorage.setItem("certrot-token", token.value); });
          function counts(states) {
            var s = states || {};
            return { verified: s.verified || 0, sent: (s.pending || 0) + (s.sent || 0) + (s.applied || 0),
              failed: (s.failed || 0) + (s.rejected || 0) + (s.timed_out || 0) };
          }
          function pct(n, size) { return size > 0 ? (100 * n / size).toFixed(2) : "0"; }
          function render(c) {
            document.getElementById("campaign-state").textContent = c.state;
            (c.waves || []).forEach(function (w) {
              var el = document.getElementById("wave-" + (w.index + 1));
              if (!el) { return; }
              var k = counts(w.states);
              el.dataset.size = w.size; el.dataset.verified = k.verified; el.dataset.sent = k.sent; el.dataset.failed = k.failed;
              el.querySelector(".wave-state").textContent = w.state;
              el.querySelector(".wave-counts").textContent = k.verified + " verified, " + k.sent + " in flight, " + k.failed + " failed of " + w.size;
              var bar = el.querySelector(".track");
              bar.setAttribute("aria-valuenow", k.verified);
              var segs = bar.querySelectorAll("span");
              segs[0].style.width = pct(k.verified, w.size) + "%";
              segs[1].style.width = pct(k.sent, w.size) + "%";
              segs[2].style.width = pct(k.failed, w.size) + "%";
            });
          }
          function refresh() {
            return fetch(api, { headers: token.value ? { "Authorization": "Bearer " + token.value } : {} })
              .then(function (r) { return r.ok ? r.json() : null; })
              .then(function (c) { if (c) { render(c); } })
              .catch(function () {});
          }
          function act(what) {
            status.classList.remove("error");
            status.textContent = what + "…";
            var headers = { "Content-Type": "application/json" };
            if (token.value) { headers["Authorization"] = "Bearer " + token.value; }
            sessionStorage.setItem("certrot-token", token.value);
            fetch(api + "/" + what, { method: "POST", headers: headers, body: "{}" })
              .then(function (r) {
                return r.json().catch(function () { return {}; }).then(function (body) {
                  if (r.ok) {
                    status.textContent = what + ": done (" + (body.state || "ok") + ")";
                  } else {
                    status.classList.add("error");
                    status.textContent = what + " refused: " + r.status + " " + (body.message || r.statusText);
                  }
                  return refresh();
                });
              })
              .catch(function (e) { status.classList.add("error"); status.textContent = what + " failed: " + e; });
          }
          ["pause", "resume", "abort"].forEach(function (what) {
            document.getElementById(what).addEventListener("click", function () { act(what); });
          });
          setInterval(refresh, 1000);
        })();
        """
}
