package apifytest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/rqkit/apify"
)

// encode applies content codings to b in order, with real encoders.
func encode(t testing.TB, b []byte, codings ...string) []byte {
	t.Helper()
	for _, c := range codings {
		var out bytes.Buffer
		var w io.WriteCloser
		switch c {
		case "br":
			w = brotli.NewWriterLevel(&out, brotli.DefaultCompression)
		case "gzip":
			w = gzip.NewWriter(&out)
		case "deflate":
			w = zlib.NewWriter(&out)
		case "identity":
			continue
		default:
			t.Fatalf("no encoder for %q", c)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		b = out.Bytes()
	}
	return b
}

// bigBatch is a batch of n requests whose JSON is well over 1 KiB, the size
// from which apify-client-js compresses bodies with brotli.
func bigBatch(n int) []byte {
	items := make([]map[string]any, n)
	for i := range items {
		u := fmt.Sprintf("https://example.com/products/%d?ref=listing-page-with-a-long-query", i)
		items[i] = map[string]any{"url": u, "uniqueKey": u, "method": "GET", "userData": map[string]any{"label": "DETAIL", "depth": 1}}
	}
	b, _ := json.Marshal(items)
	return b
}

// Bodies in br, gzip, deflate, identity and lists of them are accepted by
// batch add, add and update, over raw HTTP, and read back with the SDK.
func TestEncodedBodies(t *testing.T) {
	s, _, q, ids := newQueue(t, 1)
	c := raw(t, s)
	qp := "/v2/request-queues/" + q
	sdk := s.Client().RequestQueue(q)
	ctx := context.Background()

	batch := bigBatch(20)
	if len(batch) < 2048 {
		t.Fatalf("batch is only %d bytes", len(batch))
	}
	for i, codings := range [][]string{
		{"br"}, {"gzip"}, {"deflate"}, {"identity"},
		{"gzip", "br"}, {"br", "deflate"}, {"identity", "gzip", "identity"}, {"deflate", "gzip", "br"},
	} {
		header := strings.Join(codings, ", ")
		t.Run(header, func(t *testing.T) {
			// A fresh batch each time, so that every request is new.
			var items []map[string]any
			_ = json.Unmarshal(batch, &items)
			for _, it := range items {
				it["uniqueKey"] = it["uniqueKey"].(string) + "#" + strconv.Itoa(i)
			}
			plain, _ := json.Marshal(items)
			body := encode(t, plain, codings...)
			r := c.do(OpBatchAddRequests, "POST", qp+"/requests/batch", body, "Content-Encoding", header)
			expectStatus(t, r, 201)
			processed := r.data(t)["processedRequests"].([]any)
			if len(processed) != 20 {
				t.Fatalf("%d processed", len(processed))
			}
			id := processed[7].(map[string]any)["requestId"].(string)
			got, err := sdk.GetRequest(ctx, id)
			if err != nil || got.UniqueKey != items[7]["uniqueKey"] || string(got.UserData) != `{"depth":1,"label":"DETAIL"}` {
				t.Errorf("read back %+v, %v", got, err)
			}

			add := encode(t, fmt.Appendf(nil, `{"url":"https://x.test/%d","uniqueKey":"single-%d"}`, i, i), codings...)
			r = c.do(OpAddRequest, "POST", qp+"/requests", add, "Content-Encoding", header)
			expectStatus(t, r, 201)
			if r.data(t)["requestId"] != RequestID("single-"+strconv.Itoa(i)) {
				t.Errorf("add: %s", r.Raw)
			}

			upd := encode(t, fmt.Appendf(nil, `{"id":%q,"url":"https://example.com/0","uniqueKey":"u0","retryCount":%d}`, ids[0], i+1), codings...)
			r = c.do(OpUpdateRequest, "PUT", qp+"/requests/"+ids[0], upd, "Content-Encoding", header)
			expectStatus(t, r, 200)
			if got, err := sdk.GetRequest(ctx, ids[0]); err != nil || got.RetryCount != i+1 {
				t.Errorf("update read back %+v, %v", got, err)
			}
		})
	}

	// Content-Encoding given as two header lines is one list.
	req, _ := http.NewRequest("POST", s.URL+qp+"/requests", bytes.NewReader(encode(t, []byte(`{"url":"https://two.test/","uniqueKey":"two"}`), "gzip", "br")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("Content-Encoding", "gzip")
	req.Header.Add("Content-Encoding", "br")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Errorf("two Content-Encoding lines: %d", resp.StatusCode)
	}
}

// brotliTransport compresses every request body of 1 KiB or more with
// brotli, as apify-client-js does.
type brotliTransport struct {
	next       http.RoundTripper
	compressed *int
}

func (bt brotliTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil {
		return bt.next.RoundTrip(r)
	}
	b, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	if len(b) >= 1024 {
		var out bytes.Buffer
		w := brotli.NewWriter(&out)
		_, _ = w.Write(b)
		_ = w.Close()
		b = out.Bytes()
		r.Header.Set("Content-Encoding", "br")
		*bt.compressed++
	}
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	return bt.next.RoundTrip(r)
}

// The SDK's client, with a transport that compresses like the official JS
// client, adds, batch-adds and updates through brotli end to end.
func TestBrotliThroughTheSDK(t *testing.T) {
	s, _, q, _ := newQueue(t, 0)
	n := 0
	sdk := s.Client(apify.WithHTTPClient(&http.Client{Transport: brotliTransport{http.DefaultTransport, &n}})).RequestQueue(q)
	ctx := context.Background()
	long := strings.Repeat("x", 1500)
	reqs := make([]apify.Request, 25)
	for i := range reqs {
		reqs[i] = apify.Request{URL: "https://example.com/" + strconv.Itoa(i), UniqueKey: "k" + strconv.Itoa(i)}
	}
	res, err := sdk.BatchAddRequests(ctx, reqs, apify.RequestOptions{})
	if err != nil || len(res.Processed) != 25 {
		t.Fatalf("batch add: %+v, %v", res, err)
	}
	reg, err := sdk.AddRequest(ctx, apify.Request{URL: "https://example.com/long?q=" + long, UniqueKey: "long"}, apify.RequestOptions{})
	if err != nil || reg.RequestID != RequestID("long") {
		t.Fatalf("add: %+v, %v", reg, err)
	}
	got, err := sdk.GetRequest(ctx, RequestID("k3"))
	if err != nil {
		t.Fatal(err)
	}
	got.UserData = json.RawMessage(`{"note":"` + long + `"}`)
	got.HandledAt = time.Date(2026, 3, 14, 16, 0, 0, 0, time.UTC)
	if _, err := sdk.MarkHandled(ctx, *got, apify.RequestOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := sdk.GetRequest(ctx, RequestID("k3"))
	if err != nil || !back.HandledAt.Equal(got.HandledAt) || !strings.Contains(string(back.UserData), long) {
		t.Errorf("read back %+v, %v", back, err)
	}
	if n != 3 {
		t.Errorf("%d bodies were compressed, want 3 (the test proves nothing otherwise)", n)
	}
	if len(s.Requests(q)) != 26 || len(s.Handled(q)) != 1 {
		t.Errorf("%d requests, %d handled", len(s.Requests(q)), len(s.Handled(q)))
	}
}

func TestUnsupportedAndBrokenEncodings(t *testing.T) {
	s, _, q, _ := newQueue(t, 0)
	c := raw(t, s)
	path := "/v2/request-queues/" + q + "/requests"
	body := []byte(`{"url":"https://x.test/","uniqueKey":"x"}`)
	expectError(t, c.do(OpAddRequest, "POST", path, body, "Content-Encoding", "zstd"), 415, "unsupported-content-encoding", `"zstd"`, "br, gzip, deflate or identity")
	expectError(t, c.do(OpAddRequest, "POST", path, encode(t, body, "gzip"), "Content-Encoding", "gzip, compress"), 415, "unsupported-content-encoding", `"compress"`)
	expectError(t, c.do(OpAddRequest, "POST", path, encode(t, body, "gzip", "gzip", "gzip", "gzip"), "Content-Encoding", "gzip,gzip,gzip,gzip"),
		415, "unsupported-content-encoding", "4 codings", "at most 3")
	expectStatus(t, c.do(OpAddRequest, "POST", path, encode(t, body, "gzip", "gzip", "gzip"), "Content-Encoding", "gzip,gzip,gzip"), 201)
	expectError(t, c.do(OpAddRequest, "POST", path, body, "Content-Encoding", "br"), 400, "invalid-input", "br")
	expectError(t, c.do(OpAddRequest, "POST", path, body, "Content-Encoding", "gzip"), 400, "invalid-input", "gzip-encoded", "corrupt")
	// The order matters: a body made gzip then br is not br then gzip.
	expectError(t, c.do(OpAddRequest, "POST", path, encode(t, body, "gzip", "br"), "Content-Encoding", "br, gzip"), 400, "invalid-input")
	if n := len(s.Requests(q)); n != 1 {
		t.Errorf("%d requests added, want 1", n)
	}
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A small body that decodes to far more than the limit is a 413, found
// after decoding just past the limit: fast, and with bounded memory.
func TestCompressionBombs(t *testing.T) {
	s, _, q, _ := newQueue(t, 0)
	c := &rawClient{t: t, h: s.Handler()}
	path := "/v2/request-queues/" + q + "/requests/batch"
	for _, coding := range []string{"br", "gzip", "deflate"} {
		t.Run(coding, func(t *testing.T) {
			var out bytes.Buffer
			var w io.WriteCloser
			switch coding {
			case "br":
				w = brotli.NewWriterLevel(&out, 1)
			case "gzip":
				w, _ = gzip.NewWriterLevel(&out, gzip.BestSpeed)
			case "deflate":
				w, _ = zlib.NewWriterLevel(&out, zlib.BestSpeed)
			}
			_, _ = w.Write([]byte("["))
			if _, err := io.Copy(w, io.LimitReader(zeros{}, 64<<20)); err != nil {
				t.Fatal(err)
			}
			_ = w.Close()
			if out.Len() > 200<<10 {
				t.Fatalf("the bomb is %d bytes", out.Len())
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			r := c.do(OpBatchAddRequests, "POST", path, out.Bytes(), "Content-Encoding", coding)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			expectError(t, r, 413, "request-too-large", "9437184", "decoded")
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 96<<20 { // decoding it all would allocate over 128 MiB
				t.Errorf("decoding a %d-byte bomb of 64 MiB allocated %d MiB", out.Len(), alloc>>20)
			}
			if took > 10*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
	// Too many bytes on the wire is a 413 too, however they decode.
	big := bytes.Repeat([]byte(" "), maxBodyBytes+1)
	var stored bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&stored, gzip.NoCompression)
	_, _ = zw.Write(big)
	_ = zw.Close()
	expectError(t, c.do(OpBatchAddRequests, "POST", path, stored.Bytes(), "Content-Encoding", "gzip"), 413, "request-too-large", "as sent")
	expectError(t, c.do(OpBatchAddRequests, "POST", path, big), 413, "request-too-large", "as sent")
}
