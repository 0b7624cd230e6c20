/** Events per second over the last `windowS` whole seconds (a ring of per-second counts). */
export class RateMeter {
  private readonly buckets: number[];
  private sec = 0;
  total = 0;

  constructor(
    private readonly windowS = 10,
    private readonly now: () => number = Date.now,
  ) {
    this.buckets = new Array<number>(windowS).fill(0);
  }

  add(n = 1): void {
    this.roll();
    this.buckets[this.sec % this.windowS]! += n;
    this.total += n;
  }

  perSecond(): number {
    this.roll();
    let s = 0;
    for (let i = 1; i <= this.windowS - 1; i++) s += this.buckets[(this.sec - i + this.windowS * 2) % this.windowS]!;
    return s / (this.windowS - 1);
  }

  private roll(): void {
    const s = Math.floor(this.now() / 1000);
    if (this.sec === 0 || s - this.sec >= this.windowS) {
      this.buckets.fill(0);
      this.sec = s;
    }
    while (this.sec < s) {
      this.sec++;
      this.buckets[this.sec % this.windowS] = 0;
    }
  }
}
