/** --format templates (src/cli/template.ts): the Go-template subset, rendered over JSON objects. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTemplate, renderTemplate } from '../../src/cli/template.js';
import { UnionctlError } from '../../src/errors.js';

const layer = { id: 'abc', parent: null, size: 42, writable: false, names: ['a:1', 'b:2'], nested: { deep: { x: 'y' } }, empty: [] };
const render = (template: string, value: unknown = layer) => renderTemplate(parseTemplate(template), value);

describe('--format templates', () => {
  it('fields: exact or without regard to case, nested, the object itself; null prints as nothing, lists as [a b]', () => {
    assert.equal(render('{{.id}}/{{.ID}}/{{.Size}}'), 'abc/abc/42');
    assert.equal(render('{{.nested.deep.x}}'), 'y');
    assert.equal(render('[{{.parent}}]'), '[]');
    assert.equal(render('{{.names}}'), '[a:1 b:2]');
    assert.equal(render('{{.nested}}'), '{"deep":{"x":"y"}}');
    assert.equal(render('{{.}}', 'plain'), 'plain');
    assert.equal(render('{{.parent.below}}'), '', 'a field of null is null');
  });

  it('functions, called or piped (the piped value goes last): json, join, upper, lower, title, len, index, truncate, split', () => {
    assert.equal(render('{{json .names}}'), '["a:1","b:2"]');
    assert.equal(render('{{.names | json}}'), '["a:1","b:2"]');
    assert.equal(render('{{join .names ", "}}'), 'a:1, b:2');
    assert.equal(render('{{upper .id}} {{.id | upper | lower}} {{title "hello world"}}'), 'ABC abc Hello World');
    assert.equal(render('{{len .names}} {{len .id}} {{len .empty}}'), '2 3 0');
    assert.equal(render('{{index .names 1}} {{index .nested "deep" "x"}}'), 'b:2 y');
    assert.equal(render('{{truncate .id 2}} {{.id | truncate 1}}'), 'ab a');
    assert.equal(render('{{join .names "+"}}'), 'a:1+b:2');
    assert.equal(render('{{split "a-b" "-"}}'), '[a b]');
    assert.equal(render('{{json .}}', { a: 1 }), '{"a":1}');
  });

  it('if/else and range (over lists, and over objects by key), with {{- -}} trimming', () => {
    assert.equal(render('{{if .writable}}rw{{else}}ro{{end}}'), 'ro');
    assert.equal(render('{{if .names}}has names{{end}}'), 'has names');
    assert.equal(render('{{range .names}}<{{.}}>{{end}}'), '<a:1><b:2>');
    assert.equal(render('{{range .empty}}x{{else}}none{{end}}'), 'none');
    assert.equal(render('{{range .}}{{.}},{{end}}', { b: 2, a: 1 }), '1,2,');
    assert.equal(render('a  {{- .id -}}  b'), 'aabcb');
  });

  it('\\t and \\n written out are a tab and a newline; json is {{json .}}; table makes a header of the field names', () => {
    assert.equal(render('{{.id}}\\t{{.size}}\\n'), 'abc\t42\n');
    assert.equal(render('json'), JSON.stringify(layer));
    const table = parseTemplate('table {{.id}}\\t{{len .names}}\\t{{.nested.deep.x}}');
    assert.equal(table.table, true);
    assert.deepEqual(table.header, ['ID', 'NAMES', 'X']);
    assert.equal(renderTemplate(table, layer), 'abc\t2\ty');
  });

  it('refuses what it cannot parse or render, with USAGE naming the template', () => {
    const cases: Array<[string, RegExp]> = [
      ['{{.id', /the \{\{ at 1 is not closed/],
      ['{{if .id}}x', /\{\{else\}\} or \{\{end\}\} is missing/],
      ['x{{end}}', /\{\{end\}\} without \{\{if\}\} or \{\{range\}\}/],
      ['{{nope .id}}', /unknown function nope/],
      ['{{$v}}', /variables \(\$v\) are not supported/],
      ['{{.id | }}', /empty pipe stage/],
      ['{{.id .size}}', /only a function takes arguments/],
      ['{{"open}}', /is not closed/],
      ['{{.missing}}', /no field missing \(the fields are: id, parent, size, writable, names, nested, empty\)/],
      ['{{.id.x}}', /"abc" has no field x/],
      ['{{join .id ","}}', /join needs a list/],
    ];
    for (const [template, message] of cases) {
      assert.throws(
        () => render(template),
        (e: unknown) => e instanceof UnionctlError && e.code === 'USAGE' && message.test(e.message),
        template,
      );
    }
  });
});
