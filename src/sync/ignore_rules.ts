/**
 * Which paths are left out of sync: `.filesync/` always, plus whatever `.filesyncignore` files
 * say, in gitignore syntax (parsed by the `ignore` package). Like .gitignore, a
 * `.filesyncignore` applies to its own directory and everything below it, and a deeper file's
 * rules win over a shallower one's. An ignored directory is not descended into, so nothing
 * below it can be re-included (git behaves the same).
 */
import ignore from "ignore";
import { DATA_DIR_NAME } from "../store/mod.ts";

/** File name of the per-directory ignore list. */
export const IGNORE_FILE_NAME = ".filesyncignore";

type Matcher = ReturnType<typeof ignore>;

/** The ignore rules in force for one directory: its own file's and its ancestors'. */
export class IgnoreRules {
  private constructor(
    /** Directory (relative, "" for the root) the innermost rules belong to. */
    private readonly base: string,
    private readonly matcher: Matcher | null,
    private readonly parent: IgnoreRules | null,
  ) {}

  /** Rules in force at the root, before any `.filesyncignore` is read. */
  static root(): IgnoreRules {
    return new IgnoreRules("", null, null);
  }

  /**
   * The rules for directory `dir` (relative path) given the text of its `.filesyncignore`
   * (or null if it has none).
   */
  child(dir: string, ignoreFileText: string | null): IgnoreRules {
    if (ignoreFileText === null) return this;
    return new IgnoreRules(dir, ignore().add(ignoreFileText), this);
  }

  /** Whether the relative path (of a directory when `isDir`) is left out. */
  ignores(path: string, isDir: boolean): boolean {
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (name === DATA_DIR_NAME) return true;
    return this.#decide(path, isDir) ?? false;
  }

  /** The innermost rule set's verdict on `path`, deferring to the parent when it has none. */
  #decide(path: string, isDir: boolean): boolean | null {
    if (this.matcher) {
      const rel = this.base === "" ? path : path.slice(this.base.length + 1);
      const result = this.matcher.test(isDir ? `${rel}/` : rel);
      if (result.ignored) return true;
      if (result.unignored) return false;
    }
    return this.parent ? this.parent.#decide(path, isDir) : null;
  }
}
