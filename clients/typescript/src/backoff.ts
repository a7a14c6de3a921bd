/** Exponential backoff with jitter, the Python client's rule (`clients/_backoff.py`). */

/** Seconds to wait before retry `attempt` (1, 2, ...): 0.1 s doubled per attempt up to 2 s,
 * times a random factor in [0.5, 1.5] so that clients that lost one broker do not return in step. */
export function backoffDelay(attempt: number, initial = 0.1, maximum = 2.0, jitter = 0.5): number {
  const base = Math.min(maximum, initial * 2 ** Math.min(Math.max(attempt, 1) - 1, 62));
  return base * (1 - jitter + 2 * jitter * Math.random());
}

/** Counts consecutive failures and says how long to wait after the next one. */
export class Backoff {
  failures = 0;
  /** Count one more failure; the delay in seconds before the next attempt. */
  nextDelay(): number {
    this.failures += 1;
    return backoffDelay(this.failures);
  }
  /** An attempt worked: the next failure starts from the initial delay again. */
  reset(): void {
    this.failures = 0;
  }
}

export const sleep = (seconds: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, seconds * 1000));
