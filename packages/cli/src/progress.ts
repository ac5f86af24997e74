/**
 * Progress for long-running commands: on a terminal one line redrawn in place with a bar; in logs
 * and CI a plain line every `plainEveryMs`. Always on stderr, so stdout stays for results.
 */
export class Progress {
  private readonly tty: boolean;
  private lastPlain = 0;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly plainEveryMs = 5000,
  ) {
    this.tty = !!stream.isTTY && process.env.CI === undefined;
  }

  /** Shows `text`; `fraction` (0..1) draws a bar on terminals. */
  update(text: string, fraction?: number): void {
    if (this.tty) {
      const width = Math.max(10, Math.min(30, (this.stream.columns ?? 80) - text.length - 10));
      const bar =
        fraction === undefined
          ? ''
          : `[${'#'.repeat(Math.round(Math.min(1, Math.max(0, fraction)) * width)).padEnd(width, '.')}] `;
      this.stream.write(`\r\x1b[2K${bar}${text}`);
      this.drawn = true;
      return;
    }
    const now = Date.now();
    if (now - this.lastPlain >= this.plainEveryMs) {
      this.lastPlain = now;
      this.stream.write(`${text}\n`);
    }
  }

  /** Prints a line that stays (clearing the in-place line first). */
  log(text: string): void {
    if (this.tty && this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
    this.stream.write(`${text}\n`);
  }

  /** Ends the in-place line. */
  done(): void {
    if (this.tty && this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
