package apifytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file checks responses against Apify's OpenAPI document, copied into
// testdata/ (Apache-2.0, its info block kept). The validator implements the
// subset of JSON Schema the document uses: $ref (with sibling keywords),
// type (one or a list), required, properties, items, enum, const, allOf,
// anyOf, oneOf, additionalProperties, minimum, maximum, and the date-time and
// uri formats. It is stricter than JSON Schema in one way: an object may not
// have a property its schema does not declare (unless additionalProperties
// allows it), so the emulator cannot send a field the spec does not have.

type spec struct {
	root map[string]any
	ops  map[string]specOp // by operationId
}

type specOp struct {
	method, path string
	node         map[string]any
}

var (
	specOnce sync.Once
	theSpec  *spec
	specErr  error
)

func loadSpec(t testing.TB) *spec {
	t.Helper()
	specOnce.Do(func() {
		raw, err := os.ReadFile("testdata/request-queues.openapi.yaml")
		if err != nil {
			specErr = err
			return
		}
		var root map[string]any
		if err := yaml.Unmarshal(raw, &root); err != nil {
			specErr = err
			return
		}
		s := &spec{root: root, ops: map[string]specOp{}}
		for path, item := range root["paths"].(map[string]any) {
			for method, op := range item.(map[string]any) {
				m, ok := op.(map[string]any)
				if !ok || m["operationId"] == nil {
					continue
				}
				s.ops[m["operationId"].(string)] = specOp{method: strings.ToUpper(method), path: path, node: m}
			}
		}
		theSpec = s
	})
	if specErr != nil {
		t.Fatalf("loading the OpenAPI spec: %v", specErr)
	}
	return theSpec
}

// ref resolves a local JSON pointer such as "#/components/schemas/Request".
func (s *spec) ref(ref string) map[string]any {
	var node any = s.root
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		node = node.(map[string]any)[part]
	}
	return node.(map[string]any)
}

func (s *spec) schema(name string) map[string]any { return s.ref("#/components/schemas/" + name) }

// declaredStatuses lists the statuses the spec declares for an operation.
func (s *spec) declaredStatuses(opID string) []int {
	op, ok := s.ops[opID]
	if !ok {
		return nil
	}
	var out []int
	for code := range op.node["responses"].(map[string]any) {
		n, _ := strconv.Atoi(code)
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// responseSchema returns the schema of an operation's response with that
// status, nil for a response without a body, and false when the spec does
// not declare the status.
func (s *spec) responseSchema(opID string, status int) (map[string]any, bool) {
	op, ok := s.ops[opID]
	if !ok {
		return nil, false
	}
	resp, ok := op.node["responses"].(map[string]any)[strconv.Itoa(status)].(map[string]any)
	if !ok {
		return nil, false
	}
	if r, ok := resp["$ref"].(string); ok {
		resp = s.ref(r)
	}
	content, ok := resp["content"].(map[string]any)
	if !ok {
		return nil, true
	}
	return content["application/json"].(map[string]any)["schema"].(map[string]any), true
}

// validate checks a decoded JSON value (numbers as json.Number) against a
// schema and returns every violation, each with its JSON path.
func (s *spec) validate(schema map[string]any, v any) []string {
	var errs []string
	s.check(schema, v, "$", true, &errs)
	return errs
}

func (s *spec) check(node map[string]any, v any, path string, strict bool, errs *[]string) {
	fail := func(format string, args ...any) { *errs = append(*errs, path+": "+fmt.Sprintf(format, args...)) }
	if r, ok := node["$ref"].(string); ok {
		s.check(s.ref(r), v, path, false, errs)
	}
	if t, ok := node["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		if !slices.ContainsFunc(types, func(want string) bool { return jsonTypeIs(v, want) }) {
			fail("is %s, want type %v", describe(v), types)
			return
		}
	}
	if enum, ok := node["enum"].([]any); ok {
		if !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
			fail("%v is not one of the spec's %d enum values", v, len(enum))
		}
	}
	if c, ok := node["const"]; ok && fmt.Sprint(c) != fmt.Sprint(v) {
		fail("is %v, want const %v", v, c)
	}
	if f, ok := node["format"].(string); ok {
		if str, isStr := v.(string); isStr {
			switch f {
			case "date-time":
				if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
					fail("%q is not a date-time", str)
				}
			case "uri":
				if u, err := url.Parse(str); err != nil || !u.IsAbs() {
					fail("%q is not an absolute URI", str)
				}
			}
		}
	}
	if n, ok := v.(json.Number); ok {
		f, _ := n.Float64()
		if lo, ok := number(node["minimum"]); ok && f < lo {
			fail("%v is below the minimum %v", n, lo)
		}
		if hi, ok := number(node["maximum"]); ok && f > hi {
			fail("%v is above the maximum %v", n, hi)
		}
	}
	for _, sub := range schemaList(node["allOf"]) {
		s.check(sub, v, path, false, errs)
	}
	if branches := schemaList(node["anyOf"]); branches != nil && s.matching(branches, v, path) == 0 {
		fail("matches none of anyOf's %d schemas", len(branches))
	}
	if branches := schemaList(node["oneOf"]); branches != nil {
		if n := s.matching(branches, v, path); n != 1 {
			fail("matches %d of oneOf's schemas, want exactly 1", n)
		}
	}
	switch v := v.(type) {
	case map[string]any:
		for _, req := range strs(node["required"]) {
			if _, ok := v[req]; !ok {
				fail("required property %q is missing", req)
			}
		}
		props, _ := node["properties"].(map[string]any)
		for k, pv := range v {
			if ps, ok := props[k].(map[string]any); ok {
				s.check(ps, pv, path+"."+k, true, errs)
			} else if ap, ok := node["additionalProperties"].(map[string]any); ok {
				s.check(ap, pv, path+"."+k, true, errs)
			}
		}
		if strict {
			declared, open := s.declared(node)
			if !open && len(declared) > 0 { // an object schema without properties is free-form
				for k := range v {
					if !declared[k] {
						fail("property %q is not in the spec's schema", k)
					}
				}
			}
		}
	case []any:
		if items, ok := node["items"].(map[string]any); ok {
			for i, x := range v {
				s.check(items, x, fmt.Sprintf("%s[%d]", path, i), true, errs)
			}
		}
	}
}

// matching counts the branches v satisfies.
func (s *spec) matching(branches []map[string]any, v any, path string) int {
	n := 0
	for _, b := range branches {
		var e []string
		s.check(b, v, path, true, &e)
		if len(e) == 0 {
			n++
		}
	}
	return n
}

// declared collects the properties a schema declares through $ref and
// allOf, and whether it accepts any other property.
func (s *spec) declared(node map[string]any) (map[string]bool, bool) {
	out := map[string]bool{}
	open := false
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		if r, ok := n["$ref"].(string); ok {
			walk(s.ref(r))
		}
		for k := range mapOf(n["properties"]) {
			out[k] = true
		}
		if ap, ok := n["additionalProperties"]; ok && ap != false {
			open = true
		}
		for _, sub := range schemaList(n["allOf"]) {
			walk(sub)
		}
		if n["anyOf"] != nil || n["oneOf"] != nil {
			open = true // each branch was checked strictly on its own
		}
	}
	walk(node)
	return out, open
}

func jsonTypeIs(v any, want string) bool {
	switch v := v.(type) {
	case nil:
		return want == "null"
	case bool:
		return want == "boolean"
	case string:
		return want == "string"
	case []any:
		return want == "array"
	case map[string]any:
		return want == "object"
	case json.Number:
		if want == "number" {
			return true
		}
		f, err := v.Float64()
		return want == "integer" && err == nil && f == math.Trunc(f) && !strings.ContainsAny(v.String(), ".eE")
	}
	return false
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + strconv.Quote(v)
	case json.Number:
		return "number " + v.String()
	}
	return fmt.Sprintf("%T", v)
}

func number(x any) (float64, bool) {
	switch x := x.(type) {
	case int:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func schemaList(x any) []map[string]any {
	xs, ok := x.([]any)
	if !ok {
		return nil
	}
	out := make([]map[string]any, 0, len(xs))
	for _, e := range xs {
		out = append(out, e.(map[string]any))
	}
	return out
}

func strs(x any) []string {
	xs, _ := x.([]any)
	out := make([]string, 0, len(xs))
	for _, e := range xs {
		out = append(out, e.(string))
	}
	return out
}

func mapOf(x any) map[string]any { m, _ := x.(map[string]any); return m }

func decodeJSON(t testing.TB, raw []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("response body is not JSON: %v\n%s", err, raw)
	}
	return v
}

// The validator must itself catch what it is meant to catch.
func TestSchemaValidatorCatchesViolations(t *testing.T) {
	s := loadSpec(t)
	ok := func(schema, body string) {
		t.Helper()
		if errs := s.validate(s.schema(schema), decodeJSON(t, []byte(body))); len(errs) > 0 {
			t.Errorf("%s rejected %s: %v", schema, body, errs)
		}
	}
	bad := func(schema, body, want string) {
		t.Helper()
		errs := s.validate(s.schema(schema), decodeJSON(t, []byte(body)))
		if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("%s accepted %s, or without %q: %v", schema, body, want, errs)
		}
	}
	ok("UnlockRequestsResponse", `{"data":{"unlockedCount":3}}`)
	bad("UnlockRequestsResponse", `{"data":{}}`, `required property "unlockedCount"`)
	bad("UnlockRequestsResponse", `{"data":{"unlockedCount":"3"}}`, "want type")
	bad("UnlockRequestsResponse", `{"data":{"unlockedCount":1.5}}`, "want type")
	bad("UnlockRequestsResponse", `{"data":{"unlockedCount":1,"extra":true}}`, `property "extra" is not in the spec`)
	ok("ErrorResponse", `{"error":{"type":"record-not-found","message":"x"}}`)
	bad("ErrorResponse", `{"error":{"type":"no-such-type","message":"x"}}`, "enum")
	ok("RequestResponse", `{"data":{"id":"a","uniqueKey":"u","url":"x","handledAt":null,"userData":{"any":1}}}`)
	bad("RequestResponse", `{"data":{"uniqueKey":"u","url":"x"}}`, `required property "id"`)
	bad("RequestResponse", `{"data":{"id":"a","uniqueKey":"u","url":"x","method":"FETCH"}}`, "enum")
	bad("RequestResponse", `{"data":{"id":"a","uniqueKey":"u","url":"x","handledAt":"yesterday"}}`, "date-time")
	bad("RequestResponse", `{"data":{"id":"a","uniqueKey":"u","url":"x","lockExpiresAt":"2024-01-01T00:00:00Z"}}`, "not in the spec")
	ok("BatchDeleteResponse", `{"data":{"processedRequests":[{"id":"a"},{"uniqueKey":"u"}],"unprocessedRequests":[]}}`)
	bad("BatchDeleteResponse", `{"data":{"processedRequests":[{"url":"a"}],"unprocessedRequests":[]}}`, "anyOf")
	bad("RequestQueueResponse", `{"data":{"id":"a","userId":"u","createdAt":"2024-01-01T00:00:00Z","modifiedAt":"2024-01-01T00:00:00Z","accessedAt":"2024-01-01T00:00:00Z","totalRequestCount":-1,"handledRequestCount":0,"pendingRequestCount":0,"hadMultipleClients":false,"consoleUrl":"http://x/y"}}`, "minimum")
}
