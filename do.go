package apify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Do calls any endpoint of the Apify API, for SDKs and programs that need
// one this package does not wrap (an Actor run, a dataset, a key-value
// store), through the same core as every other call: the token as
// "Authorization: Bearer", the User-Agent, per-attempt timeouts, retries
// with backoff and Retry-After, the body-size bound, redirects refused, and
// the same errors (*APIError with the response's Header, *RequestError, the
// sentinels).
//
// path is below /v2 and unescaped, such as "/actor-runs/abc" or
// "/key-value-stores/user~store/records/OUTPUT": Do escapes each segment
// and sends /v2/actor-runs/abc. query is sent as the URL's query (nil for
// none). A non-nil body (a nil pointer counts as none) is marshalled as
// JSON and sent with Content-Type application/json; a json.RawMessage is
// sent as it is. When out is not nil, the response must be the API's
// envelope {"data": ...}, and its data is decoded into out with
// encoding/json; with a nil out the response body is not read for data
// (an endpoint that answers 204, say). A 2xx without the envelope, when
// out is set, is an error matching [ErrUnexpectedResponse]. A response
// body may have up to 32 MiB.
//
// Retries follow the method, as for the calls this package wraps: GET,
// PUT and DELETE are idempotent, so they are retried after a 429, a 500,
// 502, 503 or 504, or a network failure; POST and PATCH may have an effect
// even when their answer is lost (starting a run twice, say), so they are
// retried only when the API cannot have acted on them: after a 429, or
// when the request never left (no connection could be made). For a POST
// the API deduplicates, retry it yourself.
//
// Before any I/O, Do checks its arguments and returns an error wrapping
// [ErrInvalidInput] that names the problem: a method other than GET, POST,
// PUT, PATCH or DELETE; a path that does not start with "/", starts with
// "/v2" (it is added), holds a query, a fragment, a '%' (give it
// unescaped), an empty, "." or ".." segment, a control character or
// invalid UTF-8; a "token" query parameter (the token goes in the header:
// see [WithToken]); a body that does not marshal (or a []byte: pass a
// json.RawMessage for raw JSON); an out that is not a non-nil pointer.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	if err := validateDo(method, path, query, out); err != nil {
		return fmt.Errorf("apify: Do: %w: %w", ErrInvalidInput, err)
	}
	payload, err := doBody(body)
	if err != nil {
		return fmt.Errorf("apify: Do: %w: %w", ErrInvalidInput, err)
	}
	segs := strings.Split(path[1:], "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	r := apiRequest{
		method:     method,
		ep:         endpoint{path: c.basePath + "/v2" + path, rawPath: c.baseRawPath + "/v2/" + strings.Join(segs, "/")},
		query:      query.Encode(),
		body:       payload,
		idempotent: method == http.MethodGet || method == http.MethodPut || method == http.MethodDelete,
		maxBody:    maxListBodyBytes,
	}
	resp, err := c.do(ctx, r)
	if err != nil || out == nil {
		return err
	}
	if len(resp.body) == 0 {
		return resp.unexpected("the response has no body to decode into out (pass a nil out for a call that answers without one)")
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := resp.decode(&env); err != nil {
		return err
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return resp.unexpected("no data object")
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return resp.unexpected("data does not decode into " + reflect.TypeOf(out).String() + " (" + clip(err.Error(), 200) + ")")
	}
	return nil
}

// validateDo checks Do's method, path, query and out.
func validateDo(method, path string, query url.Values, out any) error {
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return fmt.Errorf("the method %q is not GET, POST, PUT, PATCH or DELETE", clip(method, 32))
	}
	shown := clip(shownURL(path), 128) // never a query, where a token may be
	switch {
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("the path %q does not start with \"/\"; give it below /v2, such as \"/actor-runs/abc\"", shown)
	case path == "/v2" || strings.HasPrefix(path, "/v2/"):
		return fmt.Errorf("the path %q starts with /v2, which Do adds; drop it, as in \"/actor-runs/abc\"", shown)
	case !utf8.ValidString(path):
		return errors.New("the path is not valid UTF-8")
	case strings.ContainsAny(path, "?#"):
		return fmt.Errorf("the path %q holds a query or a fragment; pass the query as Do's query argument", shown)
	case strings.Contains(path, "%"):
		return fmt.Errorf("the path %q holds a '%%'; give it unescaped: Do escapes each segment", shown)
	}
	for i, r := range path {
		if unicode.IsControl(r) {
			return fmt.Errorf("the path has a control character (%U) at byte %d", r, i)
		}
	}
	for _, seg := range strings.Split(path[1:], "/") {
		switch seg {
		case "":
			return fmt.Errorf("the path %q has an empty segment (\"//\", or a trailing \"/\")", shown)
		case ".", "..":
			return fmt.Errorf("the path %q has a %q segment, which servers and proxies resolve away", shown, seg)
		}
	}
	for name := range query {
		if strings.EqualFold(name, "token") {
			return errors.New("the query has a \"token\" parameter; the token never goes in the URL: give it with WithToken, which sends it in the Authorization header")
		}
	}
	if out != nil {
		if v := reflect.ValueOf(out); v.Kind() != reflect.Pointer || v.IsNil() {
			return fmt.Errorf("out is a %T; it must be a non-nil pointer (or nil, to decode nothing)", out)
		}
	}
	return nil
}

// doBody returns the JSON Do sends, or nil for no body.
func doBody(body any) ([]byte, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if !json.Valid(b) {
			return nil, errors.New("the body is a json.RawMessage that is not valid JSON")
		}
		return b, nil
	case []byte:
		return nil, errors.New("the body is a []byte, which encoding/json would send as a base64 string; pass a json.RawMessage for raw JSON")
	}
	if v := reflect.ValueOf(body); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil, nil
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("the body does not marshal to JSON: %w", err)
	}
	return payload, nil
}
