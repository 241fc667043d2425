package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver"
	"plaza/peek"
	"plaza/peek/snapshot"
	"plaza/web"
)

const serveUsage = `Usage: plaza serve [--config FILE] [--demo] [--log-format FORMAT]

Runs the homeserver. With no database URL it starts a private PostgreSQL
cluster in <data_dir>/postgres (using the system's PostgreSQL binaries) and
stops it on exit. SIGINT or SIGTERM shut down gracefully: requests in flight
finish (up to 10s), then PostgreSQL stops; a second signal exits at once.

Federation runs on its own HTTPS listener (federation_listen, :8448) when
tls_cert and tls_key are set; without them Plaza logs that federation is off
and other servers cannot reach it.

Examples:
  PLAZA_REGISTRATION=open plaza serve --demo   # try it: http://localhost:8008
  PLAZA_SERVER_NAME=example.org PLAZA_PUBLIC_URL=https://matrix.example.org plaza serve
  plaza serve --config /etc/plaza/plaza.toml

Settings (config file key, environment variable, default):
`

// Server timeouts. There is no WriteTimeout: /sync long-polls hold a
// response open for minutes, and a server-wide write deadline would cut them
// off; handlers bound their own work instead. There is no ReadTimeout either:
// net/http cancels a request's context when a read deadline passes during a
// long-running handler, and bodies are bounded by the handlers' size limits.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	// shutdownGrace bounds how long requests in flight may take to finish
	// after a shutdown signal.
	shutdownGrace = 10 * time.Second
)

func (a app) serve(ctx context.Context, args []string) int {
	c := newCommand("serve", serveUsage+settingsHelp())
	configPath := configFlag(c.flags)
	demo := c.flags.Bool("demo", false, "on first start, create users alice and bob (password plaza-demo) and a welcome room")
	logFormat, logLevel := logFlags(c.flags, "info")
	if code, ok := c.parse(a, args); !ok {
		return code
	}
	log, err := newLogger(a.stderr, *logFormat, *logLevel)
	if err != nil {
		return a.usageError(c, "%v", err)
	}
	cfg, code, ok := a.loadConfig(c, *configPath)
	if !ok {
		return code
	}
	// The homeserver's packages log through slog's default logger.
	slog.SetDefault(log)

	ctx, shutdown := context.WithCancel(ctx)
	defer shutdown()
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		sig, ok := <-signals
		if !ok {
			return
		}
		log.Info("shutting down; send the signal again to exit at once", "signal", sig.String())
		shutdown()
		if sig, ok := <-signals; ok {
			// The embedded PostgreSQL gets SIGINT from the kernel when we
			// die (see package cluster), so it still shuts down cleanly.
			log.Warn("second signal: exiting without waiting", "signal", sig.String())
			os.Exit(exitFailed)
		}
	}()

	if err := runServer(ctx, cfg, *demo, log); err != nil {
		log.Error("plaza serve failed", "error", err.Error())
		return exitFailed
	}
	log.Info("stopped")
	return exitOK
}

// runServer runs the homeserver until ctx is cancelled (a signal), the HTTP
// server fails or the embedded PostgreSQL dies, then shuts down in order:
// HTTP first, so nothing new arrives, then the pool, then PostgreSQL.
func runServer(ctx context.Context, cfg Config, demo bool, log *slog.Logger) (err error) {
	if cfg.TLSCACert != "" {
		if cfg, err = issueTLS(cfg, time.Now()); err != nil {
			return err
		}
		log.Info("issued the federation certificate for "+serverHost(cfg.ServerName), "cert", cfg.TLSCert, "ca", cfg.TLSCACert)
	}
	// Listen before anything slow, so that a port already in use fails at
	// once; connections that arrive meanwhile wait in the kernel's backlog.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen address %s: %w", cfg.Listen, err)
	}
	defer ln.Close() // after Serve, a no-op; before it, releases the port
	var fedLn net.Listener
	if cfg.FederationEnabled() {
		if fedLn, err = net.Listen("tcp", cfg.FederationListen); err != nil {
			return fmt.Errorf("federation listen address %s: %w", cfg.FederationListen, err)
		}
		defer fedLn.Close()
	}

	// A signal during start-up makes the step under way fail with a
	// cancelled context; that is a requested stop, not a failure.
	interrupted := func(err error) error {
		if ctx.Err() != nil {
			log.Info("start-up interrupted", "error", err.Error())
			return nil
		}
		return err
	}

	db, err := openDatabase(ctx, cfg, ownCluster, log)
	if err != nil {
		return interrupted(err)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	hs, err := homeserver.New(ctx, homeserver.Config{
		ServerName:   cfg.ServerName,
		PublicURL:    cfg.PublicURL,
		DataDir:      cfg.DataDir,
		Registration: cfg.Registration,
		RateLimit:    cfg.RateLimit,

		RegistrationSharedSecret: cfg.RegistrationSecret,

		FederationCAFile:   cfg.FederationCAFile,
		FederationDelegate: cfg.FederationDelegate,
		FederationNotaries: cfg.Notaries(),

		FederationAllowPrivate: cfg.FederationPrivate,
	}, db.DB)
	if err != nil {
		return interrupted(fmt.Errorf("starting the homeserver: %w", err))
	}
	signIn, err := newSignIn(cfg, demo, hs, log)
	if err != nil {
		return interrupted(fmt.Errorf("starting sign-in: %w", err))
	}
	rooms, err := newCommunity(ctx, cfg, hs, signIn, log)
	if err != nil {
		return interrupted(fmt.Errorf("starting rooms on demand: %w", err))
	}
	if demo {
		if err := seedDemo(ctx, hs, cfg, log); err != nil {
			return interrupted(fmt.Errorf("creating the demo content: %w", err))
		}
	}
	if ctx.Err() != nil {
		return nil // stopped during start-up: do not start serving
	}
	// The snapshot cache renders each event once for the web room page.
	renderer := web.NewRenderer()
	previews := peek.New(hs, peek.Config{Snapshot: snapshot.Config{Render: renderer.Render, MaxBytes: cfg.PeekCacheBytes()}})
	mounts := []func(chi.Router){previews.Routes}
	if rooms != nil {
		mounts = append(mounts, rooms.Routes)
	}
	// The web site (room pages for anonymous visitors, live streams, the
	// composer) serves from the previews' snapshot cache.
	site, err := web.New(hs, previews.Cache(), web.Config{Sessions: signIn, Repos: repoRooms(rooms), JoinGate: joinGate(rooms), Log: log, Renderer: renderer})
	if err != nil {
		return fmt.Errorf("starting the web site: %w", err)
	}
	// Live streams are hijacked connections, which srv.Shutdown neither
	// waits for nor closes.
	defer site.Close()

	// Shutdown ends GET and HEAD requests at once (reads, chiefly /sync
	// long-polls that would otherwise hold the server for their whole
	// timeout) while writes get the full grace period to finish.
	stopping, stopReads := context.WithCancel(context.Background())
	defer stopReads()
	srv := &http.Server{
		Handler:           endReadsOnShutdown(signIn.Handler(hs.Handler(append(mounts, site.Routes)...)), stopping),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	// The federation listener serves only the key server and the
	// Server-Server API, over TLS; no TLS certificate, no federation.
	var fedSrv *http.Server
	if fedLn != nil {
		fedSrv = &http.Server{
			Handler:           hs.FederationHandler(),
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		go func() {
			err := fedSrv.ServeTLS(fedLn, cfg.TLSCert, cfg.TLSKey)
			served <- fmt.Errorf("federation listener: %w", err)
		}()
		log.Info("federation listener on "+fedLn.Addr().String(), "listen", fedLn.Addr().String())
	} else {
		log.Info("federation is off: set PLAZA_TLS_CERT and PLAZA_TLS_KEY to serve it on PLAZA_FEDERATION_LISTEN (default :8448)")
	}
	if cfg.AdminListen != "" {
		// Profiling stays off the public listener: it exposes internals.
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		admin := &http.Server{Addr: cfg.AdminListen, Handler: mux, ReadHeaderTimeout: readHeaderTimeout}
		go func() {
			if err := admin.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener failed", "listen", cfg.AdminListen, "err", err)
			}
		}()
		defer admin.Close()
		log.Info("admin listener (pprof) on "+cfg.AdminListen, "listen", cfg.AdminListen)
	}

	url := browserURL(ln.Addr())
	log.Info("Plaza is ready at "+url, "url", url, "listen", ln.Addr().String(),
		"server_name", cfg.ServerName, "public_url", cfg.PublicURL, "registration", cfg.Registration)
	if demo {
		log.Info(fmt.Sprintf("demo: point any Matrix client (Element, for one) at %s and log in as %s or %s, password %s",
			cfg.PublicURL, demoUsers()[0].localpart, demoUsers()[1].localpart, demoPassword))
	}

	var failure error
	select {
	case <-ctx.Done():
	case err := <-served:
		failure = fmt.Errorf("HTTP server: %w", err)
	case <-db.clusterDied():
		failure = errors.New("the embedded PostgreSQL exited unexpectedly; see " + cfg.EmbeddedClusterDir() + "/server.log")
	}

	stopReads()
	graceCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(graceCtx); err != nil {
		log.Warn("requests still running after the grace period were cut off", "grace", shutdownGrace.String())
		_ = srv.Close()
	}
	if fedSrv != nil {
		if err := fedSrv.Shutdown(graceCtx); err != nil {
			_ = fedSrv.Close()
		}
	}
	// Before the database closes: the federation sender writes what rooms
	// handed it to its queue, for the next start to send.
	hs.Federation.Close()
	return failure
}

// endReadsOnShutdown cancels the context of GET and HEAD requests when
// stopping is cancelled. Such requests change nothing, so ending them early
// loses nothing. A handler that gives up without answering (a long-poll sees
// only a cancelled context, as if the client had gone) leaves the client an
// empty response; it gets a 503 instead, which Matrix clients retry.
func endReadsOnShutdown(next http.Handler, stopping context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		unhook := context.AfterFunc(stopping, cancel)
		defer unhook()
		tw := &trackingWriter{ResponseWriter: w}
		next.ServeHTTP(tw, r.WithContext(ctx))
		if !tw.wrote && stopping.Err() != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"the server is shutting down; retry shortly"}`)
		}
	})
}

// trackingWriter notes whether a handler answered at all.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's Flush and
// deadlines.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// Flush keeps streaming handlers that assert http.Flusher working.
func (t *trackingWriter) Flush() {
	t.wrote = true
	_ = http.NewResponseController(t.ResponseWriter).Flush()
}

// browserURL is the URL to open for a listener: a wildcard address becomes
// localhost, which is what a person on the same machine types.
func browserURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
