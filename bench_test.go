package apify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkUnlock compares UnlockRequests with the floor no client can beat
// by much: a hand-written net/http POST to the same loopback server, in the
// same run, with a keep-alive pool, a per-request timeout context, the same
// headers, and the same decoding of {"data":{"unlockedCount":N}} into a
// struct. See bench/README.md for the command and a recorded run.
//
//	mode=seq/impl=baseline, mode=seq/impl=sdk      one call at a time
//	mode=par16/impl=baseline, mode=par16/impl=sdk  16 calls in flight
//
// Each reports calls/s and the TCP connections the server accepted during
// the timed loop (new-conns: 0 once warm).
func BenchmarkUnlock(b *testing.B) {
	const token = "apify_api_BENCHMARK"
	payload := []byte(`{"data":{"unlockedCount":7}}`)
	var newConns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(payload)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	srv.Start() // HTTP/1.1, loopback
	defer srv.Close()

	// The baseline: what a careful hand-written call looks like.
	baseTransport := &http.Transport{
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 64, // room for 16 in flight, like the SDK's pool
		IdleConnTimeout:     90 * time.Second,
	}
	defer baseTransport.CloseIdleConnections()
	baseClient := &http.Client{Transport: baseTransport}
	target := srv.URL + "/v2/request-queues/q/requests/unlock?clientKey=k"
	userAgent := userAgent(false, "")
	baseline := func(ctx context.Context) (int, error) {
		ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", userAgent)
		resp, err := baseClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body) // to EOF, so the connection is reused
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		var env struct {
			Data struct {
				UnlockedCount int `json:"unlockedCount"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return 0, err
		}
		return env.Data.UnlockedCount, nil
	}

	c, err := NewClient(WithBaseURL(srv.URL), WithToken(token))
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseIdleConnections()
	q := c.RequestQueue("q")
	sdk := func(ctx context.Context) (int, error) {
		res, err := q.UnlockRequests(ctx, "k")
		if err != nil {
			return 0, err
		}
		return res.UnlockedCount, nil
	}

	ctx := context.Background()
	check := func(b *testing.B, n int, err error) {
		if err != nil || n != 7 {
			b.Fatalf("got %d, %v", n, err)
		}
	}
	// report adds calls/s and the connections dialled during the timed loop.
	report := func(b *testing.B, connsBefore int64) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		b.ReportMetric(float64(newConns.Load()-connsBefore), "new-conns")
	}
	const inFlight = 16
	procs := runtime.GOMAXPROCS(0)
	parallelism := (inFlight + procs - 1) / procs // RunParallel runs parallelism×GOMAXPROCS goroutines

	impls := []struct {
		name string
		call func(context.Context) (int, error)
	}{{"baseline", baseline}, {"sdk", sdk}}
	seq := func(call func(context.Context) (int, error)) func(*testing.B) {
		return func(b *testing.B) {
			for range 100 { // warm-up: dial, fill the pool
				n, err := call(ctx)
				check(b, n, err)
			}
			b.ReportAllocs()
			conns := newConns.Load()
			b.ResetTimer()
			for range b.N {
				n, err := call(ctx)
				check(b, n, err)
			}
			b.StopTimer()
			report(b, conns)
		}
	}
	par := func(call func(context.Context) (int, error)) func(*testing.B) {
		return func(b *testing.B) {
			warm := make(chan error, inFlight)
			for range inFlight { // warm-up: one connection per goroutine
				go func() {
					for range 50 {
						if _, err := call(ctx); err != nil {
							warm <- err
							return
						}
					}
					warm <- nil
				}()
			}
			for range inFlight {
				if err := <-warm; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			conns := newConns.Load()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n, err := call(ctx)
					if err != nil || n != 7 {
						b.Errorf("got %d, %v", n, err)
						return
					}
				}
			})
			b.StopTimer()
			report(b, conns)
		}
	}
	// Baseline and SDK run back to back in each mode, so that both see the
	// same load on a shared machine; benchstat -col /impl pairs them.
	for _, impl := range impls {
		b.Run("mode=seq/impl="+impl.name, seq(impl.call))
	}
	for _, impl := range impls {
		b.Run(fmt.Sprintf("mode=par%d/impl=%s", inFlight, impl.name), par(impl.call))
	}
}

// readBounded keeps every byte whatever Content-Length claims (a custom
// RoundTripper may get it wrong), whether the body fits the bufferedBody's
// own small buffer or not, and never allocates a second buffer for a short
// body of known length.
func TestReadBoundedKeepsEveryByte(t *testing.T) {
	for n := range 3 * smallBody {
		data := []byte(strings.Repeat("x", n))
		for _, cl := range []int64{-1, int64(n), int64(n / 2), int64(n) + 10, 0} {
			b, err := readBounded(io.NopCloser(bytes.NewReader(data)), cl, maxBodyBytes)
			if err != nil || !bytes.Equal(b.data, data) || b.truncated {
				t.Fatalf("n %d, Content-Length %d: got %q, %v", n, cl, b.data, err)
			}
		}
	}
	const body = `{"data":{"unlockedCount":7}}`
	r := strings.NewReader(body)
	rc := io.NopCloser(r)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(body)
		_, _ = readBounded(rc, int64(len(body)), maxBodyBytes)
	})
	if allocs != 1 { // the bufferedBody
		t.Errorf("%v allocations reading a short body", allocs)
	}
}
