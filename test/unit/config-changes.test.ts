/** commit --change: Dockerfile instructions applied to an image config's runtime part. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyConfigChanges } from '../../src/image/config-changes.js';
import { UnionctlError } from '../../src/errors.js';

const base = { Env: ['PATH=/usr/bin', 'HOME=/root'], Cmd: ['/app'], WorkingDir: '/srv', Labels: { a: '1' }, Hostname: '' };

describe('applyConfigChanges', () => {
  it('CMD and ENTRYPOINT take the JSON form as it is and run the shell form with /bin/sh -c', () => {
    const c = applyConfigChanges(base, ['CMD ["/bin/echo", "hi there"]', 'entrypoint exec "$0" --flag']);
    assert.deepEqual(c.Cmd, ['/bin/echo', 'hi there']);
    assert.deepEqual(c.Entrypoint, ['/bin/sh', '-c', 'exec "$0" --flag']);
  });

  it('ENV replaces a variable in place, appends a new one, takes quotes and the KEY VALUE form', () => {
    const c = applyConfigChanges(base, ['ENV PATH=/bin:/usr/bin GREETING="hello world"', "ENV MOTTO it's fine"]);
    assert.deepEqual(c.Env, ['PATH=/bin:/usr/bin', 'HOME=/root', 'GREETING=hello world', "MOTTO=it's fine"]);
  });

  it('LABEL, EXPOSE and VOLUME add to what is there; USER, STOPSIGNAL set; WORKDIR is relative to the one before', () => {
    const c = applyConfigChanges(base, [
      'LABEL b=2 "c d"=3',
      'EXPOSE 80 53/udp 8000-8010',
      'VOLUME ["/data"]',
      'VOLUME /a /b',
      'USER app',
      'STOPSIGNAL SIGINT',
      'WORKDIR www',
    ]);
    assert.deepEqual(c.Labels, { a: '1', b: '2', 'c d': '3' });
    assert.deepEqual(c.ExposedPorts, { '80/tcp': {}, '53/udp': {}, '8000-8010/tcp': {} });
    assert.deepEqual(c.Volumes, { '/data': {}, '/a': {}, '/b': {} });
    assert.equal(c.User, 'app');
    assert.equal(c.StopSignal, 'SIGINT');
    assert.equal(c.WorkingDir, '/srv/www');
    assert.equal(c.Hostname, '', 'other fields pass through');
    assert.deepEqual(base.Labels, { a: '1' }, 'the input is not changed');
  });

  it('refuses, naming the change: unknown instructions, a missing argument, bad pairs, ports, JSON and quotes', () => {
    const cases: Array<[string, RegExp]> = [
      ['RUN make', /RUN is not an instruction commit can apply/],
      ['ONBUILD RUN x', /ONBUILD is not an instruction/],
      ['', /it is empty/],
      ['CMD', /CMD needs an argument/],
      ['LABEL novalue', /"novalue" is not KEY=VALUE/],
      ['ENV =x', /"=x" is not KEY=VALUE/],
      ['EXPOSE 80/icmp', /"80\/icmp" is not a port/],
      ['CMD ["a", 1]', /JSON array of strings/],
      ['USER a b', /takes one argument/],
      ['ENV A="open', /a " is not closed/],
    ];
    for (const [change, message] of cases) {
      assert.throws(
        () => applyConfigChanges(base, [change]),
        (e: unknown) => e instanceof UnionctlError && e.code === 'USAGE' && message.test(e.message),
        change,
      );
    }
  });
});
