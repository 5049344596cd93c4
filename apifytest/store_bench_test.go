package apifytest

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

// The benchmarks run the store directly (no HTTP) on queues of 1k, 100k and
// 1M requests, 10% of them locked by 100 other clients, to show that bulk
// unlock and head/lock cost the same whatever the queue's size. Each
// fixture is built once per process and left as it was found after each run
// (the clock never moves, so no lock expires).

type benchFixture struct {
	s *store
	q string
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[int]*benchFixture{}
)

func fixture(b *testing.B, n int) *benchFixture {
	b.Helper()
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f := fixtures[n]; f != nil {
		return f
	}
	s := newStore(NewManualClock(t0))
	info, _, err := s.createQueue(caller{user: DefaultUser, now: s.now()}, "bench")
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 10000
	for start := 0; start < n; start += chunk {
		items := make([]requestData, 0, chunk)
		for i := start; i < min(start+chunk, n); i++ {
			u := "https://example.com/" + strconv.Itoa(i)
			items = append(items, requestData{uniqueKey: u, url: u, method: "GET"})
		}
		if _, err := s.addRequests(caller{user: DefaultUser, now: s.now()}, info.ID, items, false); err != nil {
			b.Fatal(err)
		}
	}
	for locked, i := 0, 0; locked < n/10; i++ { // 10% locked by 100 other clients
		c := caller{user: DefaultUser, clientKey: "other-" + strconv.Itoa(i%100), now: s.now()}
		res, err := s.listAndLockHead(c, info.ID, min(25, n/10-locked), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		locked += len(res.Items)
	}
	f := &benchFixture{s: s, q: info.ID}
	fixtures[n] = f
	return f
}

var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}

const (
	benchLockLimit = 25 // each client holds 25 locks
	benchClients   = 20 // operations per timed batch
)

func benchCallers() []caller {
	cs := make([]caller, benchClients)
	for i := range cs {
		cs[i] = caller{user: DefaultUser, clientKey: "me-" + strconv.Itoa(i), now: time.Now().UTC().Truncate(time.Millisecond)}
	}
	return cs
}

// BenchmarkStoreUnlock measures one bulk unlock releasing a client's 25 locks.
func BenchmarkStoreUnlock(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			f := fixture(b, size.n)
			cs := benchCallers()
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				batch := min(benchClients, b.N-done)
				b.StopTimer()
				for _, c := range cs[:batch] {
					if res, _ := f.s.listAndLockHead(c, f.q, benchLockLimit, time.Hour); len(res.Items) != benchLockLimit {
						b.Fatalf("locked %d", len(res.Items))
					}
				}
				b.StartTimer()
				for _, c := range cs[:batch] {
					if n, err := f.s.unlock(c, f.q); err != nil || n != benchLockLimit {
						b.Fatalf("unlocked %d, %v", n, err)
					}
				}
				done += batch
			}
		})
	}
}

// BenchmarkStoreListAndLockHead measures one head/lock of 25 requests.
func BenchmarkStoreListAndLockHead(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			f := fixture(b, size.n)
			cs := benchCallers()
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				batch := min(benchClients, b.N-done)
				for _, c := range cs[:batch] {
					if res, _ := f.s.listAndLockHead(c, f.q, benchLockLimit, time.Hour); len(res.Items) != benchLockLimit {
						b.Fatalf("locked %d", len(res.Items))
					}
				}
				b.StopTimer()
				for _, c := range cs[:batch] {
					if _, err := f.s.unlock(c, f.q); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				done += batch
			}
		})
	}
}
