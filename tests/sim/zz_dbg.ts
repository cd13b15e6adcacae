import { simulate } from "./cluster.ts";
const [seed, nodes, a, b, from] = Deno.args;
let n = 0;
simulate({ seed: +seed, nodes: +nodes, trace: (t, m) => {
  if (t < +from) return;
  if (!((m.from === a && m.to === b) || (m.from === b && m.to === a))) return;
  if (n++ > 60) return;
  console.log(t, m.type, m.from, "->", m.to, "term", m.term, "idx", m.index, "lt", m.logTerm, "c", m.commit, "rej", m.reject, m.rejectHint, "ents", m.entries.length, m.snapshot ? `snap ${m.snapshot.meta.index} off ${m.snapshot.offset} size ${m.snapshot.size} len ${m.snapshot.data.length}` : "");
}});
