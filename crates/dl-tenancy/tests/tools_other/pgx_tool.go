// Go with pgx v4 (Debian 12: golang-github-jackc-pgx-v4-dev, built in GOPATH mode) against a
// workspace, with pgxpool's defaults (statement cache: every query prepared under a name):
// `migrate` creates a table unqualified (it lands in tenant_custom) and adds a column, both
// idempotent; `app` reads the seed's query 200 times over 4 connections and does the seed's
// upsert with jsonb parameters. Prints one JSON line.
//
// Env: DATABASE_URL (override login), READ_DATABASE_URL (read login), DL_READ_QUERY and
// DL_UPSERT (the seed's SQL), DL_KEY (the key the upsert writes).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/jackc/pgx/v4/pgxpool"
)

var numbered = regexp.MustCompile(`^person:(\d+)$`)

// right: `person:N` -> `Name N`, `person:<tool>` -> `Written by <tool>`.
func right(key, name string) bool {
	if m := numbered.FindStringSubmatch(key); m != nil {
		return name == "Name "+m[1]
	}
	return name == "Written by "+strings.TrimPrefix(key, "person:")
}

func emit(v map[string]interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	ctx := context.Background()
	switch os.Args[1] {
	case "migrate":
		// recipe: Go pgx v4 migration
		// The override login's URI (direct or pooled: no session state is needed); tables
		// created unqualified land in tenant_custom.
		pool, err := pgxpool.Connect(ctx, os.Getenv("DATABASE_URL"))
		if err != nil {
			log.Fatal(err)
		}
		defer pool.Close()
		for _, step := range []string{
			`CREATE TABLE IF NOT EXISTS pgx_gadgets (id bigserial PRIMARY KEY, name text NOT NULL)`,
			`ALTER TABLE pgx_gadgets ADD COLUMN IF NOT EXISTS color text`,
		} {
			if _, err := pool.Exec(ctx, step); err != nil {
				log.Fatal(err)
			}
		}
		// end recipe
		var schema string
		if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			fail(err)
		}
		emit(map[string]interface{}{"tool": "pgx", "mode": "migrate", "current_schema": schema})
	case "connect":
		// Only connects (the test points sslrootcert at another CA: this must be refused).
		pool, err := pgxpool.Connect(ctx, os.Getenv("DATABASE_URL"))
		if err == nil {
			var one int
			err = pool.QueryRow(ctx, `SELECT 1`).Scan(&one)
			pool.Close()
		}
		out := map[string]interface{}{"tool": "pgx", "mode": "connect", "connected": err == nil}
		if err != nil {
			out["error"] = err.Error()
		}
		emit(out)
	case "app":
		app(ctx)
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}

func app(ctx context.Context) {
	readQuery, upsert, key := os.Getenv("DL_READ_QUERY"), os.Getenv("DL_UPSERT"), os.Getenv("DL_KEY")
	// recipe: Go pgx v4
	// pgxpool with its defaults on the pooled URIs (prepared statements work through the
	// pooler); jsonb parameters as Go maps. upsert: the seed's INSERT ... ON CONFLICT.
	reads, err := pgxpool.Connect(ctx, os.Getenv("READ_DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer reads.Close()
	writes, err := pgxpool.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer writes.Close()
	correct := func(key, name string) error {
		_, err := writes.Exec(ctx, upsert, key, "verified",
			map[string]interface{}{"display_name": name},
			map[string]interface{}{"source": "app"})
		return err
	}
	// end recipe

	var mu sync.Mutex
	var wg sync.WaitGroup
	queries, wrong := 0, 0
	var errs []string
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				rows, err := reads.Query(ctx, readQuery)
				bad, n := 0, 0
				if err == nil {
					for rows.Next() {
						var k, name string
						if err = rows.Scan(&k, &name); err != nil {
							break
						}
						n++
						if !right(k, name) {
							bad++
						}
					}
					rows.Close()
					if err == nil {
						err = rows.Err()
					}
				}
				mu.Lock()
				queries++
				if err != nil {
					errs = append(errs, err.Error())
				} else if n != 20 {
					wrong++
				} else {
					wrong += bad
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stat := reads.Stat()

	out := map[string]interface{}{
		"tool": "pgx", "mode": "app", "queries": queries, "errors": len(errs), "wrong": wrong,
		"connections": stat.TotalConns(), "max_conns": stat.MaxConns(),
		// pgx's default: every query prepared under a name, cached per connection.
		"prepared_statements": !reads.Config().ConnConfig.PreferSimpleProtocol &&
			reads.Config().ConnConfig.BuildStatementCache != nil,
	}
	if len(errs) > 0 {
		out["first_error"] = errs[0]
	}
	tool := strings.TrimPrefix(key, "person:")
	err = correct(key, "Written by draft")
	if err == nil {
		err = correct(key, "Written by "+tool)
	}
	if err != nil {
		out["upsert_error"] = err.Error()
	} else {
		var name, status string
		var payload map[string]interface{}
		err = reads.QueryRow(ctx,
			`SELECT display_name, identity_payload, status FROM dl_resolved.people WHERE identity_key = $1`,
			key).Scan(&name, &payload, &status)
		if err != nil {
			out["upsert_error"] = err.Error()
		} else {
			out["resolved_name"] = name
			out["resolved_payload_name"] = payload["display_name"]
			out["resolved_status"] = status
		}
	}
	emit(out)
}
