import { useEffect, useState } from 'preact/hooks';

// Reads `load()` now and every `every` ms while mounted; [data, error, reload].
export function usePolled(load, deps, every = 5000) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    const run = () =>
      load().then(
        (d) => live && (setData(d), setError(null)),
        (e) => live && setError(e),
      );
    run();
    const timer = every ? setInterval(run, every) : 0;
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [...deps, tick]);
  return [data, error, () => setTick((t) => t + 1)];
}
