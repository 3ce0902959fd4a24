package main

// FerretDB v1.24 on PostgreSQL pushes an equality filter down as
// `_jsonb -> 'f' @> '<value>'` (`_jsonb #> '{a,b}' @> …` for a dotted path), but builds a
// MongoDB index as a btree on `((_jsonb -> 'f'))`, which PostgreSQL cannot use for `@>`: every
// such query reads the whole table. A GIN index on the same expression serves `@>`.
//
// keepGINIndexes adds one such index per indexed field (and `_id`) of every collection, as
// FerretDB's own metadata lists them, and drops the ones it made for a field that is no longer
// indexed. It only reads FerretDB's metadata and only creates or drops indexes it named itself
// (`…_<hash>_gin`; FerretDB's own end in `_idx`), so FerretDB is otherwise unchanged.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// metadataTable is FerretDB v1's per-schema table mapping each collection to its table and
// listing its indexes: one row per collection, `_jsonb` holding
// {"_id": <collection>, "table": <table>, "indexes": [{"name", "pgindex", "key": {<field>: ±1,
// "$s": <FerretDB's type annotations>}, "unique"}], …}.
const metadataTable = "_ferretdb_database_metadata"

// ourIndex matches the names ginIndexName makes.
var ourIndex = regexp.MustCompile(`_[0-9a-f]{8}_gin$`)

type ginIndex struct {
	schema, table, name, expr string
}

// keepGINIndexes reconciles the GIN indexes every interval until ctx ends. PostgreSQL being
// away (stopped, restarting after a crash) is normal: it reconnects on the next round.
func keepGINIndexes(ctx context.Context, url string, interval time.Duration, l *slog.Logger) {
	var conn *pgx.Conn
	var lastErr string

	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()

	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	for {
		err := func() error {
			if conn == nil || conn.IsClosed() {
				c, err := connect(ctx, url)
				if err != nil {
					return err
				}
				conn = c
			}
			return reconcile(ctx, conn, l)
		}()

		switch {
		case err == nil:
			lastErr = ""
		case ctx.Err() != nil:
			return
		default:
			if conn != nil {
				_ = conn.Close(ctx)
				conn = nil
			}
			// Once per distinct failure: PostgreSQL down for a while is not worth a line a second.
			if msg := err.Error(); msg != lastErr {
				l.WarnContext(ctx, "GIN index round failed; retrying", slog.String("error", msg))
				lastErr = msg
			}
		}

		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	// The URL is FerretDB's, with pool settings (pool_max_conns) that only pgxpool parses.
	poolConfig, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	config := poolConfig.ConnConfig
	config.RuntimeParams["application_name"] = "ferretdb-local-gin"
	// CREATE INDEX takes a SHARE lock on the table, which waits behind FerretDB's writers and
	// then holds new ones back. Never wait long for it: the next round tries again.
	config.RuntimeParams["lock_timeout"] = "1000"

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	return pgx.ConnectConfig(ctx, config)
}

// reconcile makes one round over every FerretDB database (a PostgreSQL schema).
func reconcile(ctx context.Context, conn *pgx.Conn, l *slog.Logger) error {
	rows, err := conn.Query(ctx, `
		SELECT n.nspname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relname = $1 AND c.relkind = 'r'`, metadataTable)
	if err != nil {
		return err
	}

	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}

	for _, schema := range schemas {
		if err = reconcileSchema(ctx, conn, schema, l); err != nil {
			if raced(err) {
				continue // dropped or busy meanwhile: the next round sees the new state
			}
			return fmt.Errorf("schema %q: %w", schema, err)
		}
	}

	return nil
}

func reconcileSchema(ctx context.Context, conn *pgx.Conn, schema string, l *slog.Logger) error {
	want, err := wanted(ctx, conn, schema)
	if err != nil {
		return err
	}

	have, err := existing(ctx, conn, schema)
	if err != nil {
		return err
	}

	for name, index := range want {
		if have[name] {
			continue
		}

		// fastupdate=off: a lookup would otherwise also read the whole pending list, which grows
		// to 4 MB during a bulk insert. jsonb_path_ops: smaller than the default opclass and
		// serves `@>`, the only operator the pushdown uses on a field.
		q := fmt.Sprintf(
			`CREATE INDEX IF NOT EXISTS %s ON %s USING gin (%s jsonb_path_ops) WITH (fastupdate = off)`,
			pgx.Identifier{index.name}.Sanitize(),
			pgx.Identifier{schema, index.table}.Sanitize(),
			index.expr,
		)
		if _, err = conn.Exec(ctx, q); err != nil {
			if raced(err) {
				continue
			}
			return err
		}

		l.InfoContext(ctx, "GIN index created", slog.String("schema", schema), slog.String("index", index.name))
	}

	for name := range have {
		if _, ok := want[name]; ok {
			continue
		}

		q := fmt.Sprintf(`DROP INDEX IF EXISTS %s`, pgx.Identifier{schema, name}.Sanitize())
		if _, err = conn.Exec(ctx, q); err != nil {
			if raced(err) {
				continue
			}
			return err
		}

		l.InfoContext(ctx, "GIN index dropped", slog.String("schema", schema), slog.String("index", name))
	}

	return nil
}

// wanted returns the GIN indexes the schema's collections should have, by index name.
func wanted(ctx context.Context, conn *pgx.Conn, schema string) (map[string]ginIndex, error) {
	// Every collection has FerretDB's `_id_` index; `_id` is added anyway so that a lookup by
	// `_id` never depends on it.
	q := fmt.Sprintf(`
		SELECT m._jsonb->>'table', k.field
		FROM %[1]s m
		CROSS JOIN LATERAL jsonb_array_elements(m._jsonb->'indexes') AS i(idx)
		CROSS JOIN LATERAL jsonb_object_keys(i.idx->'key') AS k(field)
		WHERE left(k.field, 1) <> '$'
		UNION
		SELECT m._jsonb->>'table', '_id' FROM %[1]s m`,
		pgx.Identifier{schema, metadataTable}.Sanitize(),
	)

	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}

	want := map[string]ginIndex{}
	var table, field string

	_, err = pgx.ForEachRow(rows, []any{&table, &field}, func() error {
		if table == "" {
			return nil
		}
		name := ginIndexName(table, field)
		want[name] = ginIndex{schema: schema, table: table, name: name, expr: fieldExpr(field)}
		return nil
	})

	return want, err
}

// existing returns the names of the GIN indexes in the schema that this code made.
func existing(ctx context.Context, conn *pgx.Conn, schema string) (map[string]bool, error) {
	rows, err := conn.Query(ctx, `
		SELECT c.relname
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_am a ON a.oid = c.relam
		WHERE n.nspname = $1 AND a.amname = 'gin'`, schema)
	if err != nil {
		return nil, err
	}

	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}

	have := make(map[string]bool, len(names))
	for _, name := range names {
		if ourIndex.MatchString(name) {
			have[name] = true
		}
	}

	return have, nil
}

// ginIndexName is deterministic, unique per table and field, and within PostgreSQL's 63 bytes
// (FerretDB's table names are ASCII, so cutting bytes cuts characters).
func ginIndexName(table, field string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(table + "\x00" + field))

	prefix := table
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}

	return fmt.Sprintf("%s_%08x_gin", prefix, h.Sum32())
}

// fieldExpr is the expression FerretDB's pushdown compares, so that the planner matches it:
// `_jsonb -> 'f'` for a top-level field, `_jsonb #> '{a,b}'` for a dotted path.
func fieldExpr(field string) string {
	parts := strings.Split(field, ".")
	if len(parts) == 1 {
		return fmt.Sprintf("(_jsonb -> %s)", quoteLiteral(field))
	}

	quoted := make([]string, len(parts))
	for i, p := range parts {
		quoted[i] = quoteLiteral(p)
	}

	return fmt.Sprintf("(_jsonb #> ARRAY[%s]::text[])", strings.Join(quoted, ", "))
}

// quoteLiteral quotes a string constant; FerretDB checks standard_conforming_strings=on, under
// which doubling single quotes is all it takes.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// raced tells the errors that concurrent DDL by FerretDB (a database or collection dropped
// meanwhile, a lock held) or a concurrent round can cause; the next round sees the new state.
func raced(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}

	switch pgErr.Code {
	case "42P01", // undefined_table
		"3F000", // invalid_schema_name
		"42704", // undefined_object
		"42P07", // duplicate_table: an index of that name was created meanwhile
		"23505", // unique_violation: the same, caught in the catalog
		"55P03", // lock_not_available: lock_timeout
		"40P01": // deadlock_detected
		return true
	}

	return false
}
