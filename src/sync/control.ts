/**
 * The local control channel between `filesync status|invite` and the running `filesync serve`
 * of the same directory: HTTP on 127.0.0.1 at a random port, authenticated by a random token.
 * Port and token are in `<dir>/.filesync/control.json`, mode 0600, so only the user who runs
 * the daemon (and root) can talk to it.
 */

const FILE_NAME = "control.json";

/** Contents of control.json. */
/** What a sync run on request (`status --wait`) reports. */
export interface SyncNowResult {
  inSync: boolean;
  pendingUp: number;
  pendingDown: number;
  /** Why local changes wait (the last failure), if they do. */
  waitingUp: string | null;
  /** Why committed changes are not written here yet, if they are not. */
  waitingDown: string | null;
}

export interface ControlEndpoint {
  port: number;
  token: string;
  pid: number;
}

/** Handlers the daemon provides. */
export interface ControlHandlers {
  status(): Promise<unknown>;
  invite(opts: { ttlMs?: number; once?: boolean }): Promise<{ invite: string }>;
  removeMember(peerId: string): Promise<{ removed: string }>;
  sync(): Promise<SyncNowResult>;
  /** Every retained version of a path, newest first. */
  history(path: string): Promise<unknown>;
  /** Make a path (file or directory) as it was at a version, snapshot label or time. */
  restore(path: string, at: string): Promise<unknown>;
  /** Name the current committed version cluster-wide. */
  label(name: string): Promise<unknown>;
  /** The cluster's named versions. */
  labels(): Promise<unknown>;
}

/** A running control server. */
export interface ControlServer {
  close(): Promise<void>;
}

/** No daemon runs for this directory (or it cannot be reached). */
export class NotRunningError extends Error {
  override name = "NotRunningError";
}

/** The node took longer than the call allowed (it is running, and busy: a long sync pass). */
export class ControlTimeoutError extends Error {
  override name = "ControlTimeoutError";
}

function tokenMatches(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function badRequest(message: string): Response {
  return Response.json({ error: message }, { status: 400 });
}

/** Start the control server and write control.json into `dataDir`. */
export async function startControlServer(
  dataDir: string,
  handlers: ControlHandlers,
): Promise<ControlServer> {
  const token = Array.from(
    crypto.getRandomValues(new Uint8Array(24)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const auth = req.headers.get("authorization") ?? "";
    if (!tokenMatches(auth, `Bearer ${token}`)) return new Response("forbidden", { status: 403 });
    const url = new URL(req.url);
    try {
      if (req.method === "GET" && url.pathname === "/status") {
        return Response.json(await handlers.status());
      }
      if (req.method === "POST" && url.pathname === "/invite") {
        const body = await req.json() as { ttlMs?: number; once?: boolean };
        return Response.json(await handlers.invite(body));
      }
      if (req.method === "POST" && url.pathname === "/sync") {
        return Response.json(await handlers.sync());
      }
      if (req.method === "GET" && url.pathname === "/labels") {
        return Response.json(await handlers.labels());
      }
      if (req.method === "POST" && url.pathname === "/history") {
        const body = await req.json() as { path?: unknown };
        if (typeof body.path !== "string") return badRequest("path is required");
        return Response.json(await handlers.history(body.path));
      }
      if (req.method === "POST" && url.pathname === "/restore") {
        const body = await req.json() as { path?: unknown; at?: unknown };
        if (typeof body.path !== "string" || typeof body.at !== "string") {
          return badRequest("path and at are required");
        }
        return Response.json(await handlers.restore(body.path, body.at));
      }
      if (req.method === "POST" && url.pathname === "/label") {
        const body = await req.json() as { name?: unknown };
        if (typeof body.name !== "string") return badRequest("name is required");
        return Response.json(await handlers.label(body.name));
      }
      if (req.method === "POST" && url.pathname === "/remove") {
        const body = await req.json() as { peerId?: unknown };
        if (typeof body.peerId !== "string") {
          return Response.json({ error: "peerId is required" }, { status: 400 });
        }
        return Response.json(await handlers.removeMember(body.peerId));
      }
      return new Response("not found", { status: 404 });
    } catch (e) {
      return Response.json({ error: (e as Error).message }, { status: 500 });
    }
  });
  const endpoint: ControlEndpoint = { port: server.addr.port, token, pid: Deno.pid };
  const path = `${dataDir}/${FILE_NAME}`;
  await Deno.writeTextFile(`${path}.tmp`, JSON.stringify(endpoint), { mode: 0o600 });
  await Deno.chmod(`${path}.tmp`, 0o600);
  await Deno.rename(`${path}.tmp`, path);
  return {
    async close() {
      await Deno.remove(path).catch(() => {});
      await server.shutdown();
    },
  };
}

/** Call the daemon of `dataDir`; throws NotRunningError if none answers. */
export async function callControl<T>(
  dataDir: string,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<T> {
  let endpoint: ControlEndpoint;
  try {
    endpoint = JSON.parse(await Deno.readTextFile(`${dataDir}/${FILE_NAME}`));
  } catch {
    throw new NotRunningError("no filesync serve is running for this directory");
  }
  let res: Response;
  try {
    res = await fetch(`http://127.0.0.1:${endpoint.port}${path}`, {
      method,
      headers: { authorization: `Bearer ${endpoint.token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === "TimeoutError") {
      throw new ControlTimeoutError(
        `the filesync serve for this directory (pid ${endpoint.pid}) did not answer within ` +
          `${Math.round(timeoutMs / 1000)} s`,
      );
    }
    throw new NotRunningError(
      `the filesync serve for this directory (pid ${endpoint.pid}) does not answer`,
    );
  }
  const json = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error((json as { error?: string }).error ?? `HTTP ${res.status}`);
  return json as T;
}
