package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/rqkit/apify"
)

// Page is what the crawler saves of each page.
type Page struct {
	URL   string `json:"url"`
	Depth int    `json:"depth"`
	Title string `json:"title"`
	Links int    `json:"links"`
}

// README: handler

// crawl is the crawler: a Consume handler that fetches a page, adds the
// links it finds one level deeper (up to maxDepth), and saves the page.
func crawl(q *apify.RequestQueueClient, clientKey string, maxDepth int,
	save func(context.Context, Page) error) apify.Handler {
	return func(ctx context.Context, req *apify.Request) error {
		var data struct {
			Depth int `json:"depth"`
		}
		if req.UserData != nil { // none: a start URL, depth 0
			if err := json.Unmarshal(req.UserData, &data); err != nil {
				return fmt.Errorf("bad userData %s: %w", req.UserData, apify.ErrNoRetry) // fail it, no retry
			}
		}
		title, links, err := fetch(ctx, req.URL)
		if err != nil {
			return err // Consume retries it later, up to MaxRetries
		}
		if data.Depth < maxDepth && len(links) > 0 {
			next := make([]apify.Request, len(links))
			for i, link := range links {
				depth := json.RawMessage(fmt.Sprintf(`{"depth":%d}`, data.Depth+1))
				next[i] = apify.Request{URL: link, UniqueKey: link, UserData: depth}
			}
			// With our own clientKey, so the queue reads as one client.
			if _, err := q.BatchAddRequests(ctx, next, apify.RequestOptions{ClientKey: clientKey}); err != nil {
				return err
			}
		}
		return save(ctx, Page{URL: req.URL, Depth: data.Depth, Title: title, Links: len(links)})
	}
}

// README: end

// maxPage bounds how much of a page is read.
const maxPage = 2 << 20

var (
	titleRe = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)
	hrefRe  = regexp.MustCompile(`(?is)<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))`)
)

// fetch gets a page and returns its title and the distinct http(s) links
// it has to pages of the same host, fragments dropped, in page order. A
// status that another try cannot fix (404, say) fails the request at once
// (ErrNoRetry); 5xx and network errors are worth another try. (The HTML is
// read with two regular expressions, which is enough for an example; a real
// crawler parses it, with golang.org/x/net/html say.)
func fetch(ctx context.Context, pageURL string) (title string, links []string, err error) {
	base, err := url.Parse(pageURL)
	if err != nil {
		return "", nil, fmt.Errorf("%q: %w: %w", pageURL, err, apify.ErrNoRetry)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pageURL, nil)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", err, apify.ErrNoRetry)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPage))
	switch {
	case err != nil:
		return "", nil, err
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return "", nil, fmt.Errorf("GET %s: %s", pageURL, resp.Status)
	case resp.StatusCode >= 300:
		return "", nil, fmt.Errorf("GET %s: %s: %w", pageURL, resp.Status, apify.ErrNoRetry)
	}
	if m := titleRe.FindSubmatch(body); m != nil {
		title = strings.Join(strings.Fields(html.UnescapeString(string(m[1]))), " ")
	}
	seen := map[string]bool{}
	for _, m := range hrefRe.FindAllSubmatch(body, -1) {
		ref, err := url.Parse(html.UnescapeString(string(m[1]) + string(m[2]) + string(m[3])))
		if err != nil {
			continue
		}
		u := base.ResolveReference(ref)
		u.Fragment, u.RawFragment = "", ""
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host != base.Host || seen[u.String()] {
			continue
		}
		seen[u.String()] = true
		links = append(links, u.String())
	}
	return title, links, nil
}
