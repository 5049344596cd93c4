package apifytest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkHandlerBatchAdd is what a batch add of 25 requests (about 3 KiB of
// JSON, which apify-client-js sends brotli-compressed) costs the emulator's
// handler in memory, by Content-Encoding, in one run: identity is the
// baseline the decoding adds to. The same 25 uniqueKeys every time, so after
// the first call the store only finds them present.
func BenchmarkHandlerBatchAdd(b *testing.B) {
	raw := bigBatch(25)
	for _, coding := range []string{"identity", "br", "gzip"} {
		body := encode(b, raw, coding)
		b.Run("encoding="+coding, func(b *testing.B) {
			s, err := New()
			if err != nil {
				b.Fatal(err)
			}
			h, q := s.Handler(), s.CreateQueue("bench")
			path := "/v2/request-queues/" + q + "/requests/batch"
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				if coding != "identity" {
					r.Header.Set("Content-Encoding", coding)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusCreated {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkHandlerRateLimits is what the rate-limit model adds to a call that
// stays within its limits (a GET of one request, in the request-CRUD class),
// model off (the baseline) and on, in one run. The limit is set so high that
// no call is refused: only the bookkeeping is measured.
func BenchmarkHandlerRateLimits(b *testing.B) {
	for _, model := range []string{"off", "on"} {
		b.Run("model="+model, func(b *testing.B) {
			var opts []Option
			if model == "on" {
				opts = append(opts, WithRateLimits(RateLimits{RequestCRUD: 1 << 30, Batch: 1 << 30, Other: 1 << 30}))
			}
			s, err := New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			h, q := s.Handler(), s.CreateQueue("bench")
			id := s.AddRequests(q, Request{URL: "https://example.com/1"})[0]
			path := fmt.Sprintf("/v2/request-queues/%s/requests/%s", q, id)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
				if w.Code != http.StatusOK {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}
