/**
 * The numbers of a `ping`-style summary: loss, and round-trip min, average,
 * max and 99th percentile.
 *
 * sensor_client.ts uses it, and udp_client.ts (the same summary over UDP), so it
 * lives beside the first.
 *
 * @example
 * ```ts
 * import { lossPercent, summarize } from "./stats.ts";
 * console.log(lossPercent(3, 2)); // 33.3
 * console.log(summarize([0.25, 0.2, 0.25])); // { min: 0.2, avg: 0.233..., max: 0.25, p99: 0.25 }
 * ```
 *
 * @module
 */

/** What {@linkcode summarize} returns. */
export interface Summary {
  /** The smallest value. */
  min: number;
  /** The mean. */
  avg: number;
  /** The largest value. */
  max: number;
  /** The 99th percentile, by nearest rank: a value that occurred. */
  p99: number;
}

/**
 * Min, average, max and p99 of `values`, or `null` when there are none.
 *
 * @example
 * ```ts
 * import { summarize } from "./stats.ts";
 * console.log(summarize([3, 1, 2])); // { min: 1, avg: 2, max: 3, p99: 3 }
 * console.log(summarize([])); // null
 * ```
 */
export function summarize(values: readonly number[]): Summary | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return {
    min: sorted[0],
    avg: values.reduce((a, b) => a + b, 0) / values.length,
    max: sorted[sorted.length - 1],
    p99: sorted[Math.ceil(0.99 * sorted.length) - 1],
  };
}

/**
 * The share of `sent` that was not `received`, in percent, to one decimal.
 *
 * @example
 * ```ts
 * import { lossPercent } from "./stats.ts";
 * console.log(lossPercent(4, 3), lossPercent(0, 0)); // 25 0
 * ```
 */
export function lossPercent(sent: number, received: number): number {
  const percent = sent === 0 ? 0 : (sent - received) / sent * 100;
  // One decimal; a loss too small for it keeps one digit (1 of 10,000: 0.01), never shows as 0.
  return percent > 0 && percent < 0.05
    ? Number(percent.toPrecision(1))
    : Math.round(percent * 10) / 10;
}
