package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/rqkit/apify/apifytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// README: test

func TestCrawl(t *testing.T) {
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<title>Shop</title> <a href="/a">A</a> <a href="/b">B</a>`)
	}))
	defer site.Close()
	srv := apifytest.Start(t) // the Apify API, in-process; closed when the test ends
	queueID := srv.CreateQueue("test")

	var mu sync.Mutex
	var pages []Page
	save := func(_ context.Context, p Page) error {
		mu.Lock()
		defer mu.Unlock()
		pages = append(pages, p)
		return nil
	}
	stats, err := crawlQueue(t.Context(), srv.Client(), queueID, []string{site.URL + "/"}, 1, save)
	require.NoError(t, err)
	assert.Equal(t, 3, stats.Handled) // the start page and the two pages it links to
	assert.Len(t, pages, 3)
	b, _ := srv.Request(queueID, apifytest.RequestID(site.URL+"/b"))
	assert.JSONEq(t, `{"depth":1}`, string(b.UserData)) // added by the handler, one level down
	assert.Empty(t, srv.Locked(queueID))                // no lock left behind
}

// README: end
