package apify

import "time"

// backoff is the module's one backoff scheme, used by the client between the
// attempts of a call and by Consume between the calls it tries again. The
// wait before retry n (from 0) is drawn at random from [min, min·2^(n+1)],
// capped at max ("full jitter" above a floor); a hint from the API
// (Retry-After) replaces the draw, clamped to [min, hintMax].
type backoff struct {
	min, max time.Duration
	// hintMax caps a Retry-After hint; 0 means max.
	hintMax time.Duration
}

// wait returns the wait before retry n. randN returns a random int64 in
// [0, n); hint is the API's Retry-After, when hinted.
func (b backoff) wait(n int, hint time.Duration, hinted bool, randN func(int64) int64) time.Duration {
	if hinted {
		hmax := b.hintMax
		if hmax == 0 {
			hmax = b.max
		}
		return min(max(hint, b.min), hmax)
	}
	upper := b.max
	if n < 62 && b.min <= b.max>>(n+1) {
		upper = b.min << (n + 1)
	}
	if upper <= b.min {
		return b.min
	}
	return b.min + time.Duration(randN(int64(upper-b.min)+1))
}
