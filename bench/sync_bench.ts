/**
 * FileSync against Syncthing (and rsync) on the anchor's deterministic workload, in one run:
 * 1,000 small files, 20 of 1-8 MiB and one large file (../shared/anchors/syncthing/run.py
 * --gen-only writes the same bytes). For FileSync with two and with three nodes on 127.0.0.1:
 *   - initial sync: from starting node A (with the data already in its folder) until every
 *     other node holds a byte-identical tree (A's first scan and all commits included); the
 *     other nodes start as soon as A prints its invite, all at once;
 *   - one byte inserted in the middle of the large file, and 4 KiB overwritten in place: time
 *     until node B's copy matches, timed as the anchor times Syncthing (from after hashing A's
 *     edited file until B's copy hashes equal), the time from the edit until B's new file was
 *     in place, and object bytes B received (chunks and tree nodes);
 *   - create-to-visible latency of a new 1 KiB file on B, p50/p90/p99/max over `--trials`;
 *   - initial sync with the nodes already joined: the workload is moved into A's folder at once
 *     (the path where every byte is pushed to a majority before it is committed).
 * Then the anchor harness runs Syncthing and rsync on the same workload (if `syncthing` is
 * installed: apt-get install -y syncthing rsync) and both are printed side by side.
 *
 * Usage: deno task bench:sync [--large-mib 256] [--trials 30] [--no-anchor]
 */
import { NodeProcess, tempDirs, waitFor } from "../tests/helpers/cluster.ts";
import { ANCHOR, arg, contentHash, fileHash, generateWorkload, sh, shape } from "./workload.ts";

// Timings of nodes as users run them: no test-only consistency checks.
NodeProcess.checkViews = false;

const LARGE_MIB = Number(arg("large-mib", "256"));
const TRIALS = Number(arg("trials", "30"));

/** Object bytes a node received: fetched by it, and pushed to it before commits. */
async function receivedBytes(n: NodeProcess): Promise<number> {
  const s = await n.status();
  return s.sync.fetchedBytes + s.sync.receivedBytes;
}

function insert1(path: string) {
  const f = Deno.openSync(path, { read: true, write: true });
  const size = f.statSync().size;
  const mid = Math.floor(size / 2) + 12345;
  const tail = new Uint8Array(size - mid);
  f.seekSync(mid, Deno.SeekMode.Start);
  let n = 0;
  while (n < tail.length) n += f.readSync(tail.subarray(n)) ?? 0;
  f.seekSync(mid, Deno.SeekMode.Start);
  f.writeSync(new Uint8Array([0x42]));
  let w = 0;
  while (w < tail.length) w += f.writeSync(tail.subarray(w));
  f.close();
}

function overwrite4k(path: string) {
  const f = Deno.openSync(path, { read: true, write: true });
  const size = f.statSync().size;
  f.seekSync(Math.floor(size / 3), Deno.SeekMode.Start);
  const block = new Uint8Array(4096);
  for (let i = 0; i < block.length; i++) block[i] = (i * 7 + 13) & 0xff;
  f.writeSync(block);
  f.close();
}

interface Row {
  initialS: number;
  insert1S: number;
  insert1Bytes: number;
  overwriteS: number;
  overwriteBytes: number;
  /** From the edit (not from after hashing A's file) until B's new file was in place, s. */
  insert1InPlaceS: number;
  overwriteInPlaceS: number;
  latency?: { p50: number; p90: number; p99: number; max: number };
  /** Nodes already joined, workload moved into A's folder: until every node holds it, s. */
  movedInS?: number;
}

/**
 * Start the other nodes at once, each joining with the invite the first node printed (the
 * quick start's two steps; the invite is good for 24 hours and for any number of joins).
 */
function startJoiners(dirs: string[], first: NodeProcess): Promise<NodeProcess[]> {
  return Promise.all(dirs.map((d) => NodeProcess.start(d, ["--join", first.invite])));
}

async function runFileSync(src: string, nodeCount: number): Promise<Row> {
  const dirs = await tempDirs(nodeCount, `filesync-syncbench-${nodeCount}-`);
  await sh(["cp", "-a", `${src}/.`, dirs[0]]);
  const want = await shape(src);
  const wantHash = await contentHash(src);
  const nodes: NodeProcess[] = [];
  try {
    const t0 = performance.now();
    nodes.push(await NodeProcess.start(dirs[0]));
    nodes.push(...await startJoiners(dirs.slice(1), nodes[0]));
    for (const d of dirs.slice(1)) {
      await waitFor("initial sync", async () => (await shape(d)) === want, 1_800_000, 100);
    }
    const initialS = (performance.now() - t0) / 1000;
    for (const d of dirs.slice(1)) {
      if (await contentHash(d) !== wantHash) throw new Error(`${d} differs after initial sync`);
    }
    const [a, b] = [dirs[0], dirs[1]];
    const edit = async (mutate: (p: string) => void) => {
      await new Promise((r) => setTimeout(r, 2000));
      const before = await receivedBytes(nodes[1]);
      let lastIno = (await Deno.stat(`${b}/large.bin`)).ino;
      // As the anchor harness times Syncthing: edit, hash A's file, then start the clock, and
      // stop it once B's copy hashes equal. B's copy is replaced by a rename, so it is hashed
      // only when its inode changed: hashing 256 MiB in a loop would steal a core from the
      // nodes. "In place" is timed from the edit itself.
      mutate(`${a}/large.bin`);
      const edited = performance.now();
      const target = await fileHash(`${a}/large.bin`);
      const t = performance.now();
      // When B's new file appeared (its rename), and when the bench had also hashed it: the
      // anchor stops Syncthing's clock the second way, so that is the figure compared.
      let appearedAt = 0;
      await waitFor(
        "edit to reach B",
        async () => {
          try {
            const ino = (await Deno.stat(`${b}/large.bin`)).ino;
            if (ino === lastIno) return false;
            const seen = performance.now();
            lastIno = ino;
            if (await fileHash(`${b}/large.bin`) !== target) return false;
            appearedAt = seen;
            return true;
          } catch {
            return false;
          }
        },
        600_000,
        10,
      );
      const s = (performance.now() - t) / 1000;
      const inPlaceS = (appearedAt - edited) / 1000;
      await new Promise((r) => setTimeout(r, 1000));
      return { s, inPlaceS, bytes: (await receivedBytes(nodes[1])) - before };
    };
    const ins = await edit(insert1);
    const ow = await edit(overwrite4k);
    const row: Row = {
      initialS,
      insert1S: ins.s,
      insert1Bytes: ins.bytes,
      overwriteS: ow.s,
      overwriteBytes: ow.bytes,
      insert1InPlaceS: ins.inPlaceS,
      overwriteInPlaceS: ow.inPlaceS,
    };
    if (nodeCount === 2) {
      const lat: number[] = [];
      for (let i = 0; i < TRIALS; i++) {
        const name = `lat${String(i).padStart(3, "0")}.txt`;
        const payload = new TextEncoder().encode(`latency probe ${i}\n`.repeat(60).slice(0, 1024));
        await Deno.writeFile(`${a}/.${name}.tmp`, payload);
        const t = performance.now();
        await Deno.rename(`${a}/.${name}.tmp`, `${a}/${name}`);
        await waitFor(
          "latency probe",
          async () => {
            try {
              const got = await Deno.readFile(`${b}/${name}`);
              return got.length === payload.length && got.every((v, j) => v === payload[j]);
            } catch {
              return false;
            }
          },
          120_000,
          5,
        );
        lat.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, 200));
      }
      lat.sort((x, y) => x - y);
      row.latency = {
        p50: lat[Math.floor(lat.length / 2)],
        p90: lat[Math.floor(lat.length * 0.9)],
        p99: lat[Math.floor(lat.length * 0.99)],
        max: lat[lat.length - 1],
      };
    }
    return row;
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}

/**
 * Initial sync with the cluster formed first: the workload appears in A's folder at once (a
 * rename of a staged copy), and every byte is pushed to a majority before it is committed.
 */
async function runMovedIn(src: string, nodeCount: number): Promise<number> {
  const dirs = await tempDirs(nodeCount, `filesync-syncbench-moved-${nodeCount}-`);
  const staged = `${dirs[0]}-staged`;
  await sh(["cp", "-a", src, staged]);
  const want = await shape(src);
  const nodes: NodeProcess[] = [];
  try {
    nodes.push(await NodeProcess.start(dirs[0]));
    nodes.push(...await startJoiners(dirs.slice(1), nodes[0]));
    await waitFor("all voters", async () => {
      const s = await nodes[0].status();
      return s.members.filter((m) => m.role === "voter").length === nodeCount;
    }, 60_000);
    const t0 = performance.now();
    await Deno.rename(staged, `${dirs[0]}/data`);
    for (const d of dirs.slice(1)) {
      await waitFor(
        "moved-in sync",
        async () => (await shape(`${d}/data`).catch(() => "")) === want,
        1_800_000,
        100,
      );
    }
    return (performance.now() - t0) / 1000;
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    for (const d of [...dirs, staged]) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}

const work = await Deno.makeTempDir({ prefix: "filesync-syncbench-" });
try {
  const src = `${work}/src`;
  await generateWorkload(src, LARGE_MIB);
  const two = await runFileSync(src, 2);
  const three = await runFileSync(src, 3);
  two.movedInS = await runMovedIn(src, 2);
  three.movedInS = await runMovedIn(src, 3);

  let anchor: Record<string, number | Record<string, number>> | null = null;
  if (!Deno.args.includes("--no-anchor")) {
    try {
      await sh(["which", "syncthing"]);
      // The harness writes results.json beside itself: run a copy in our work dir.
      await Deno.copyFile(ANCHOR, `${work}/run.py`);
      await sh([
        "python3",
        `${work}/run.py`,
        "--large-mib",
        String(LARGE_MIB),
        "--work",
        `${work}/st`,
        "--trials",
        String(TRIALS),
      ]);
      anchor = JSON.parse(await Deno.readTextFile(`${work}/results.json`));
    } catch (e) {
      console.error(`anchor not run: ${(e as Error).message}`);
    }
  }

  const mib = (b: number) => (b / 2 ** 20).toFixed(2);
  const st = (k: string) => anchor ? Number(anchor[k]) : NaN;
  console.log(`\nworkload: anchor --gen-only, large file ${LARGE_MIB} MiB`);
  console.log(
    "case                      FileSync 2 nodes     FileSync 3 nodes     Syncthing           rsync",
  );
  console.log(
    `initial sync              ${two.initialS.toFixed(2)} s              ${
      three.initialS.toFixed(2)
    } s` +
      `              ${st("st_initial_s").toFixed(2)} s              ${
        st("rsync_initial_s").toFixed(2)
      } s`,
  );
  console.log(
    `initial, cluster first    ${two.movedInS!.toFixed(2)} s              ${
      three.movedInS!.toFixed(2)
    } s              -                   -`,
  );
  console.log(
    `1-byte insert             ${two.insert1S.toFixed(2)} s ${mib(two.insert1Bytes)} MiB   ${
      three.insert1S.toFixed(2)
    } s ${mib(three.insert1Bytes)} MiB   ` +
      `${st("st_insert1_s").toFixed(2)} s ${mib(st("st_insert1_bytes"))} MiB   ${
        st("rsync_insert1_s").toFixed(2)
      } s ${mib(st("rsync_insert1_bytes"))} MiB`,
  );
  console.log(
    `4 KiB overwrite           ${two.overwriteS.toFixed(2)} s ${mib(two.overwriteBytes)} MiB   ${
      three.overwriteS.toFixed(2)
    } s ${mib(three.overwriteBytes)} MiB   ` +
      `${st("st_overwrite4k_s").toFixed(2)} s ${mib(st("st_overwrite4k_bytes"))} MiB   ${
        st("rsync_overwrite4k_s").toFixed(2)
      } s ${mib(st("rsync_overwrite4k_bytes"))} MiB`,
  );
  console.log(
    `  edits, B's file in place ${two.insert1InPlaceS.toFixed(2)} / ${
      two.overwriteInPlaceS.toFixed(2)
    } s (2 nodes), ${three.insert1InPlaceS.toFixed(2)} / ${
      three.overwriteInPlaceS.toFixed(2)
    } s (3 nodes), timed from the edit itself`,
  );
  const lat = two.latency!;
  const stl = anchor?.st_latency_ms as Record<string, number> | undefined;
  console.log(
    `create-to-visible (ms)    p50 ${lat.p50.toFixed(0)} p90 ${lat.p90.toFixed(0)} p99 ${
      lat.p99.toFixed(0)
    } max ${lat.max.toFixed(0)}` +
      `                       ${
        stl ? `p50 ${stl.p50.toFixed(0)} p90 ${stl.p90.toFixed(0)} max ${stl.max.toFixed(0)}` : "-"
      }`,
  );
  console.log(JSON.stringify({ largeMiB: LARGE_MIB, fileSync2: two, fileSync3: three, anchor }));
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
