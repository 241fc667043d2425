package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/jackc/pgx/v5/pgconn"

	"plaza/homeserver/federation"
	"plaza/homeserver/id"
)

// Config is everything `plaza` reads from its config file and environment.
// It is loaded once, validated as a whole, and then passed by value: no
// command reads the environment on its own.
type Config struct {
	ServerName   string // the Matrix server name: the part after the colon in @alice:SERVER
	Listen       string // host:port the HTTP server binds
	DataDir      string // absolute; signing key, media, the embedded cluster
	DatabaseURL  string // empty: the embedded cluster under DataDir/postgres
	PublicURL    string // how clients reach us; no trailing slash
	Registration string // open, token or closed
	RateLimit    bool
	AdminListen  string          // empty: no admin listener (pprof)
	PeekCacheMB  string          // bound of the hot-room snapshot cache, MiB (a positive integer; see PeekCacheBytes)
	SSO          ssoConfig       // sign-in with GitHub and GitLab (sso.go)
	Community    communityConfig // rooms on demand (community.go)

	// RegistrationSecret enables Synapse's shared-secret admin registration
	// endpoint (/_synapse/admin/v1/register); empty: the endpoint is absent.
	RegistrationSecret string

	// Federation. Without a TLS certificate and key there is no federation
	// listener: other servers cannot reach us.
	FederationListen   string // host:port of the HTTPS federation listener
	TLSCert, TLSKey    string // PEM files for the federation listener
	FederationCAFile   string // extra CAs trusted for outbound federation (tests, private federations)
	FederationDelegate string // served as m.server at /.well-known/matrix/server; empty: not served
	FederationNotaries string // comma-separated server names asked for keys their owner cannot give
	FederationPrivate  bool   // outbound federation may reach loopback and private addresses

	// TLSCACert and TLSCAKey, instead of TLSCert and TLSKey: a CA with which
	// Plaza issues itself a certificate for its server name at every start
	// (tlsgen.go).
	TLSCACert, TLSCAKey string
}

// Notaries returns the configured notary servers.
func (c Config) Notaries() []string {
	var out []string
	for n := range strings.SplitSeq(c.FederationNotaries, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// PeekCacheBytes is peek_cache_mb in bytes (validated by LoadConfig).
func (c Config) PeekCacheBytes() int64 {
	n, _ := strconv.Atoi(c.PeekCacheMB)
	return int64(n) << 20
}

// FederationEnabled reports whether the federation listener runs.
func (c Config) FederationEnabled() bool { return c.TLSCert != "" || c.TLSCACert != "" }

// IssuedTLSDir is where the certificate issued from tls_ca_cert is written.
func (c Config) IssuedTLSDir() string { return filepath.Join(c.DataDir, "tls") }

// EmbeddedClusterDir is where the private PostgreSQL cluster lives when no
// database URL is configured.
func (c Config) EmbeddedClusterDir() string { return filepath.Join(c.DataDir, "postgres") }

// setting describes one configuration key. The table is the single source
// for loading, error messages and `plaza serve --help`.
type setting struct {
	key, env string
	def      string // the default, as it would be written in the environment
	help     string
	secret   bool // never echo the value (it may hold a password)
	field    func(*Config) any
}

// settings lists every setting in the order help shows them.
func settings() []setting {
	return append([]setting{
		{key: "server_name", env: "PLAZA_SERVER_NAME", def: "localhost:8008",
			help:  "Matrix server name, the part after ':' in user IDs (fixed once users exist)",
			field: func(c *Config) any { return &c.ServerName }},
		{key: "listen", env: "PLAZA_LISTEN", def: ":8008",
			help:  "address the HTTP server listens on, host:port",
			field: func(c *Config) any { return &c.Listen }},
		{key: "data_dir", env: "PLAZA_DATA_DIR", def: "./data",
			help:  "signing key, media and the embedded database",
			field: func(c *Config) any { return &c.DataDir }},
		{key: "database_url", env: "PLAZA_DATABASE_URL", def: "", secret: true,
			help:  "PostgreSQL URL; empty: a private cluster in <data_dir>/postgres",
			field: func(c *Config) any { return &c.DatabaseURL }},
		{key: "public_url", env: "PLAZA_PUBLIC_URL", def: "",
			help:  "URL clients reach this server at; empty: http://<server_name>",
			field: func(c *Config) any { return &c.PublicURL }},
		{key: "registration", env: "PLAZA_REGISTRATION", def: "closed",
			help:  "who may create accounts: open, token or closed",
			field: func(c *Config) any { return &c.Registration }},
		{key: "rate_limit", env: "PLAZA_RATE_LIMIT", def: "true",
			help:  "rate-limit login, registration and sending (true or false)",
			field: func(c *Config) any { return &c.RateLimit }},
		{key: "registration_shared_secret", env: "PLAZA_REGISTRATION_SHARED_SECRET", def: "", secret: true,
			help:  "enables /_synapse/admin/v1/register (HMAC-SHA1 shared-secret registration, as Synapse's); empty: off",
			field: func(c *Config) any { return &c.RegistrationSecret }},
		{key: "peek_cache_mb", env: "PLAZA_PEEK_CACHE_MB", def: "256",
			help:  "memory bound of the hot-room snapshot cache (room previews, room pages, live viewers), in MiB; least recently viewed rooms are dropped past it",
			field: func(c *Config) any { return &c.PeekCacheMB }},
		{key: "admin_listen", env: "PLAZA_ADMIN_LISTEN", def: "",
			help:  "address of the admin listener (Go pprof), e.g. 127.0.0.1:9090; empty: none",
			field: func(c *Config) any { return &c.AdminListen }},
		{key: "federation_listen", env: "PLAZA_FEDERATION_LISTEN", def: ":8448",
			help:  "address the HTTPS federation listener binds, host:port (needs tls_cert and tls_key)",
			field: func(c *Config) any { return &c.FederationListen }},
		{key: "tls_cert", env: "PLAZA_TLS_CERT", def: "",
			help:  "PEM certificate (chain) for the federation listener; empty: federation is off",
			field: func(c *Config) any { return &c.TLSCert }},
		{key: "tls_key", env: "PLAZA_TLS_KEY", def: "",
			help:  "PEM private key of tls_cert",
			field: func(c *Config) any { return &c.TLSKey }},
		{key: "tls_ca_cert", env: "PLAZA_TLS_CA_CERT", def: "",
			help:  "instead of tls_cert/tls_key: a PEM CA certificate with which Plaza issues itself a certificate for server_name at every start",
			field: func(c *Config) any { return &c.TLSCACert }},
		{key: "tls_ca_key", env: "PLAZA_TLS_CA_KEY", def: "",
			help:  "PEM private key of tls_ca_cert (RSA PKCS#1, EC or PKCS#8)",
			field: func(c *Config) any { return &c.TLSCAKey }},
		{key: "federation_ca_file", env: "PLAZA_FEDERATION_CA_FILE", def: "",
			help:  "PEM CA certificates trusted for outbound federation besides the system's",
			field: func(c *Config) any { return &c.FederationCAFile }},
		{key: "federation_delegate", env: "PLAZA_FEDERATION_DELEGATE", def: "",
			help:  "server name served at /.well-known/matrix/server (host[:port]); empty: not served",
			field: func(c *Config) any { return &c.FederationDelegate }},
		{key: "federation_notaries", env: "PLAZA_FEDERATION_NOTARIES", def: "",
			help:  "comma-separated servers asked for other servers' keys when those cannot be reached (e.g. matrix.org)",
			field: func(c *Config) any { return &c.FederationNotaries }},
		{key: "federation_allow_private", env: "PLAZA_FEDERATION_ALLOW_PRIVATE", def: "false",
			help:  "let outbound federation reach loopback and private addresses (tests, private networks)",
			field: func(c *Config) any { return &c.FederationPrivate }},
	}, append(ssoSettings(), communitySettings()...)...)
}

// origin records where a setting's value came from, so that an error names
// what the operator has to change: the variable, or the key in the file.
type origin struct {
	file string // the config file, if the value came from it
	env  bool   // the value came from the environment
}

// LoadConfig builds the configuration: defaults, then the TOML file at path
// (if path is not empty), then environment variables, which win. lookupEnv is
// os.LookupEnv outside tests.
//
// An environment variable set to the empty string counts as unset, because
// container tooling routinely passes empty variables through; to use the
// embedded database, leave database_url out of the file as well.
func LoadConfig(path string, lookupEnv func(string) (string, bool)) (Config, error) {
	var cfg Config
	from := map[string]origin{}
	table := settings()
	for _, s := range table {
		if err := assign(s.field(&cfg), s.def); err != nil {
			return Config{}, fmt.Errorf("default of %s: %w", s.key, err) // a bug in the table
		}
	}

	if path != "" {
		var raw map[string]any
		if _, err := toml.DecodeFile(path, &raw); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
		for _, key := range slices.Sorted(maps.Keys(raw)) {
			i := slices.IndexFunc(table, func(s setting) bool { return s.key == key })
			if i < 0 {
				return Config{}, fmt.Errorf("config file %s: unknown setting %q; the settings are %s", path, key, knownKeys(table))
			}
			from[key] = origin{file: path}
			if err := assign(table[i].field(&cfg), raw[key]); err != nil {
				return Config{}, settingError(table[i], fmt.Sprint(raw[key]), from[key], err.Error())
			}
		}
	}

	for _, s := range table {
		v, ok := lookupEnv(s.env)
		if !ok || v == "" {
			continue
		}
		from[s.key] = origin{env: true}
		if err := assign(s.field(&cfg), v); err != nil {
			return Config{}, settingError(s, v, from[s.key], err.Error())
		}
	}

	if err := cfg.validate(table, from); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// assign stores v, a string from the environment or a TOML value, in the
// field dst points to.
func assign(dst, v any) error {
	switch p := dst.(type) {
	case *string:
		s, ok := v.(string)
		if !ok {
			return errors.New("must be a string")
		}
		*p = s
	case *bool:
		switch b := v.(type) {
		case bool:
			*p = b
		case string:
			parsed, err := strconv.ParseBool(b)
			if err != nil {
				return errors.New("must be true or false")
			}
			*p = parsed
		default:
			return errors.New("must be true or false")
		}
	default:
		return fmt.Errorf("unsupported setting type %T", dst)
	}
	return nil
}

// validate checks every setting and fills in the derived values: the public
// URL's default and the absolute data directory.
func (c *Config) validate(table []setting, from map[string]origin) error {
	fail := func(key, value, problem string) error {
		i := slices.IndexFunc(table, func(s setting) bool { return s.key == key })
		return settingError(table[i], value, from[key], problem)
	}

	if !id.ValidServerName(c.ServerName) {
		return fail("server_name", c.ServerName,
			"not a valid Matrix server name: a DNS name, IPv4 address or [IPv6] address, optionally with :port (e.g. example.org or localhost:8008)")
	}

	if c.AdminListen != "" {
		if err := validListen(c.AdminListen); err != nil {
			return fail("admin_listen", c.AdminListen, err.Error())
		}
	}
	if err := validListen(c.Listen); err != nil {
		return fail("listen", c.Listen, err.Error())
	}

	if strings.TrimSpace(c.DataDir) == "" {
		return fail("data_dir", c.DataDir, "must not be empty")
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fail("data_dir", c.DataDir, err.Error())
	}
	c.DataDir = abs

	if c.DatabaseURL != "" {
		if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
			return fail("database_url", c.DatabaseURL,
				"not a PostgreSQL connection string (postgres://user:password@host:5432/dbname?sslmode=…)")
		}
	}

	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.ServerName
	} else if err := validPublicURL(c.PublicURL); err != nil {
		return fail("public_url", c.PublicURL, err.Error())
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")

	if err := c.validateFederation(fail); err != nil {
		return err
	}

	if err := c.validateSSO(fail); err != nil {
		return err
	}
	if err := c.validateCommunity(fail); err != nil {
		return err
	}

	if n, err := strconv.Atoi(c.PeekCacheMB); err != nil || n <= 0 || n > 1<<20 {
		return fail("peek_cache_mb", c.PeekCacheMB, "must be a whole number of MiB from 1 to 1048576")
	}

	switch c.Registration {
	case "open", "token", "closed":
	default:
		return fail("registration", c.Registration, "must be open, token or closed")
	}
	return nil
}

// validateFederation checks the federation settings. The certificate, key
// and CA files are loaded here, so that a wrong path or a key that does not
// match its certificate stops Plaza with the setting's name.
func (c *Config) validateFederation(fail func(key, value, problem string) error) error {
	if err := validListen(c.FederationListen); err != nil {
		return fail("federation_listen", c.FederationListen, err.Error())
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		return fail("tls_cert", c.TLSCert, "needs tls_key (PLAZA_TLS_KEY) too")
	case c.TLSCert == "" && c.TLSKey != "":
		return fail("tls_key", c.TLSKey, "needs tls_cert (PLAZA_TLS_CERT) too")
	case c.TLSCert != "":
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return fail("tls_cert", c.TLSCert, "cannot be used with tls_key "+strconv.Quote(c.TLSKey)+": "+err.Error())
		}
	}
	switch {
	case c.TLSCACert != "" && c.TLSCAKey == "":
		return fail("tls_ca_cert", c.TLSCACert, "needs tls_ca_key (PLAZA_TLS_CA_KEY) too")
	case c.TLSCACert == "" && c.TLSCAKey != "":
		return fail("tls_ca_key", c.TLSCAKey, "needs tls_ca_cert (PLAZA_TLS_CA_CERT) too")
	case c.TLSCACert != "" && c.TLSCert != "":
		return fail("tls_ca_cert", c.TLSCACert, "set either tls_ca_cert (a certificate issued at start) or tls_cert (a certificate you provide), not both")
	case c.TLSCACert != "":
		// Loaded here so a bad CA stops Plaza before it touches anything;
		// the certificate itself is issued at start (see issueTLS).
		if _, err := loadCertAuthority(c.TLSCACert, c.TLSCAKey); err != nil {
			return fail("tls_ca_cert", c.TLSCACert, err.Error())
		}
	}
	if c.FederationCAFile != "" {
		if _, err := federation.LoadRootCAs(c.FederationCAFile); err != nil {
			return fail("federation_ca_file", c.FederationCAFile, err.Error())
		}
	}
	if c.FederationDelegate != "" && !id.ValidServerName(c.FederationDelegate) {
		return fail("federation_delegate", c.FederationDelegate, "not a server name: host or host:port (e.g. matrix.example.org:443)")
	}
	for _, n := range c.Notaries() {
		if !id.ValidServerName(n) {
			return fail("federation_notaries", c.FederationNotaries, strconv.Quote(n)+" is not a server name; list names separated by commas")
		}
	}
	return nil
}

func validListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("must be host:port or :port (e.g. :8008 or 127.0.0.1:8008)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("the port must be a number from 0 to 65535")
	}
	if host != "" && !id.ValidServerName(host) && !id.ValidServerName("["+host+"]") {
		return errors.New("the host must be an IP address or a host name")
	}
	return nil
}

func validPublicURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an absolute http:// or https:// URL (e.g. https://matrix.example.org)")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("must not hold a query, a fragment or user info")
	}
	return nil
}

// settingError names the setting the way the operator will look for it: by
// environment variable if the value came from there, else by key and file.
func settingError(s setting, value string, from origin, problem string) error {
	quoted := strconv.Quote(value)
	if s.secret {
		quoted = "(value hidden)"
	}
	switch {
	case from.env:
		if s.secret {
			return fmt.Errorf("%s %s: %s", s.env, quoted, problem)
		}
		return fmt.Errorf("%s=%s: %s", s.env, quoted, problem)
	case from.file != "":
		return fmt.Errorf("%s = %s in %s: %s", s.key, quoted, from.file, problem)
	default:
		return fmt.Errorf("default %s = %s: %s", s.key, quoted, problem)
	}
}

// settingsHelp renders the settings table for `plaza serve --help`.
func settingsHelp() string {
	// Columns as wide as their longest entry, so every row lines up.
	table := settings()
	keyW, envW := 0, 0
	for _, s := range table {
		keyW, envW = max(keyW, len(s.key)), max(envW, len(s.env))
	}
	var b strings.Builder
	for _, s := range table {
		def := s.def
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(&b, "  %-*s %-*s %-15s %s\n", keyW, s.key, envW, s.env, def, s.help)
	}
	return b.String()
}

func knownKeys(table []setting) string {
	keys := make([]string, len(table))
	for i, s := range table {
		keys[i] = s.key
	}
	return strings.Join(keys, ", ")
}
