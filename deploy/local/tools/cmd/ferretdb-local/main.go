// Command ferretdb-local runs FerretDB v1 (MongoDB wire protocol over PostgreSQL) on loopback
// for local development, tests and CI.
//
// It embeds FerretDB through its public `ferretdb` package instead of installing
// `github.com/FerretDB/FerretDB/cmd/ferretdb`: a module-mode `go install` of that command
// ships without build/version/version.txt and the binary panics at start-up
// ("Invalid build/version/version.txt file content"). Embedding skips that check and
// disables telemetry.
//
// Beside FerretDB it keeps GIN indexes that let PostgreSQL serve FerretDB's equality
// pushdown (see gin.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	pgURL := flag.String("postgresql-url", "", "PostgreSQL connection URL (required)")
	interval := flag.Duration("gin-interval", time.Second, "how often the GIN indexes are reconciled; 0: never (to measure without them)")
	level := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	if *pgURL == "" {
		fail(fmt.Errorf("-postgresql-url is required"))
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fail(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listen},
		Logger:        logger,
		Handler:       "postgresql",
		PostgreSQLURL: *pgURL,
	})
	if err != nil {
		fail(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *interval > 0 {
		go keepGINIndexes(ctx, *pgURL, *interval, logger.With("component", "gin-indexes"))
	}

	fmt.Fprintf(os.Stderr, "ferretdb-local listening on %s (postgresql)\n", *listen)
	if err = f.Run(ctx); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ferretdb-local:", err)
	os.Exit(1)
}
