// The panels of the page. A new panel (a camera panel, say) is one more module with an init()
// that subscribes to the events it needs, one more <section> in index.html, and one line here.
import { connect, on } from "./core.js";
import * as modules from "./modules.js";
import * as commands from "./commands.js";
import * as macros from "./macros.js";
import * as data from "./data.js";
import * as plots from "./plots.js";
import * as log from "./log.js";
import * as session from "./session.js";

for (const panel of [modules, session, commands, macros, data, plots, log]) panel.init();
on("snapshot", (s) => {
  document.getElementById("config").textContent = s.room.config || "";
});
connect();
