package apifytest

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestListQueues(t *testing.T) {
	s := Start(t, WithUserToken("alice-token", "alice"), WithUserToken("bob-token", "bob"))
	get := func(token, query string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.URL+"/v2/request-queues"+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, body
	}
	names := func(body map[string]any) []any {
		var out []any
		for _, it := range body["data"].(map[string]any)["items"].([]any) {
			out = append(out, it.(map[string]any)["name"])
		}
		return out
	}
	for _, name := range []string{"first", "", "second", "third"} {
		if _, _, err := s.store.createQueue(caller{user: "alice", now: s.store.now()}, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.store.createQueue(caller{user: "bob", now: s.store.now()}, "bobs"); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		token, query string
		want         []any
		total        float64
	}{
		{"alice-token", "", []any{"first", "second", "third"}, 3},
		{"alice-token", "?unnamed=1", []any{"first", nil, "second", "third"}, 4},
		{"alice-token", "?desc=true&offset=1&limit=1", []any{"second"}, 3},
		{"alice-token", "?offset=9", nil, 3},
		{"alice-token", "?ownership=ownedByMe&limit=5000", []any{"first", "second", "third"}, 3},
		{"alice-token", "?ownership=sharedWithMe", nil, 0},
		{"bob-token", "", []any{"bobs"}, 1},
	} {
		status, body := get(tt.token, tt.query)
		if status != 200 {
			t.Fatalf("%s: %d %v", tt.query, status, body)
		}
		data := body["data"].(map[string]any)
		if got := names(body); len(got) != len(tt.want) || (len(got) > 0 && !equalAny(got, tt.want)) {
			t.Errorf("%s %s: names %v, want %v", tt.token, tt.query, got, tt.want)
		}
		if data["total"] != tt.total || data["count"] != float64(len(tt.want)) {
			t.Errorf("%s: total %v count %v, want %v and %d", tt.query, data["total"], data["count"], tt.total, len(tt.want))
		}
	}
	if _, body := get("alice-token", "?limit=5000"); body["data"].(map[string]any)["limit"] != float64(1000) {
		t.Errorf("limit is not capped at 1000: %v", body["data"])
	}
	for _, q := range []string{"?limit=0", "?offset=-1", "?desc=maybe", "?ownership=mine"} {
		if status, body := get("alice-token", q); status != 400 || body["error"].(map[string]any)["type"] != "invalid-input" {
			t.Errorf("%s: %d %v, want 400 invalid-input", q, status, body)
		}
	}
}

func equalAny(a, b []any) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
