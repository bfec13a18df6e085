import { describe, expect, it } from 'vitest';
import { StartupSteps } from './startup.js';

describe('StartupSteps', () => {
  const collect = (): { warns: Array<{ obj: object; msg: string }>; logger: { warn(obj: object, msg: string): void } } => {
    const warns: Array<{ obj: object; msg: string }> = [];
    return { warns, logger: { warn: (obj, msg) => warns.push({ obj, msg }) } };
  };

  it('names a step still running past the warning time, and again when it ends; quick steps stay quiet', async () => {
    const { warns, logger } = collect();
    const steps = new StartupSteps(logger, 50);
    expect(await steps.run('quick', () => 7)).toBe(7);
    await steps.run('slow', () => new Promise((r) => setTimeout(r, 180)));
    const running = warns.filter((w) => w.msg === 'start-up step still running');
    expect(running.length).toBeGreaterThanOrEqual(2);
    expect(running.every((w) => (w.obj as { step: string }).step === 'slow')).toBe(true);
    expect(warns.at(-1)).toMatchObject({ msg: 'start-up step ended', obj: { step: 'slow' } });
    expect(Object.keys(steps.timings)).toEqual(['quick', 'slow']);
    expect(steps.timings.slow).toBeGreaterThanOrEqual(170);
  });

  it('records a step that fails, and passes its error on', async () => {
    const { warns, logger } = collect();
    const steps = new StartupSteps(logger, 1_000);
    await expect(
      steps.run('broken', () => {
        throw new Error('no store');
      }),
    ).rejects.toThrow('no store');
    expect(steps.timings).toHaveProperty('broken');
    expect(warns).toEqual([]);
  });
});
