/**
 * Side-effect module: installs the Deno compatibility shims before libp2p is evaluated. Import
 * it first wherever libp2p is imported.
 */
import { installDenoCompat } from "./deno_compat.ts";

installDenoCompat();
