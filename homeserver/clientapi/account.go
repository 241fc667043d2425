package clientapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"plaza/homeserver/httpapi"
	"plaza/homeserver/id"
	"plaza/homeserver/password"
	"plaza/homeserver/storage"
)

func (a *API) accountRoutes(r chi.Router) {
	r.Post("/register", a.register)
	r.Get("/register/available", a.registerAvailable)
	r.Get("/register/m.login.registration_token/validity", a.registrationTokenValidity)
	r.Get("/login", a.loginFlows)
	r.Post("/login", a.login)
	r.Post("/refresh", a.refresh)
}

func (a *API) sessionRoutes(r chi.Router) {
	r.Get("/account/whoami", a.whoami)
	r.Post("/logout", a.logout)
	r.Post("/logout/all", a.logoutAll)
	r.Post("/account/password", noGuests(a.changePassword))
	r.Post("/account/deactivate", noGuests(a.deactivate))
	r.Get("/devices", a.listDevices)
	r.Get("/devices/{deviceID}", a.getDevice)
	r.Put("/devices/{deviceID}", a.renameDevice)
	r.Delete("/devices/{deviceID}", noGuests(a.deleteDevice))
	r.Post("/delete_devices", noGuests(a.deleteDevices))
}

// authDict is the "auth" member of UIA-protected requests.
type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Token      string          `json:"token"`
	Password   string          `json:"password"`
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"`
}

type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// uiaChallenge is the 401 that describes the flows.
func uiaChallenge(session string, flows [][]string, completed []string, err *httpapi.Error) *httpapi.Error {
	fl := make([]map[string]any, len(flows))
	for i, f := range flows {
		fl[i] = map[string]any{"stages": f}
	}
	if completed == nil {
		completed = []string{}
	}
	e := &httpapi.Error{Status: http.StatusUnauthorized, Code: "M_FORBIDDEN", Msg: "additional authentication is required",
		Extra: map[string]any{"session": session, "flows": fl, "params": map[string]any{}, "completed": completed}}
	if err != nil {
		e.Code, e.Msg = err.Code, err.Msg
	}
	if err == nil {
		// The spec's first 401 carries no errcode.
		e.Code = ""
	}
	return e
}

type registerRequest struct {
	Auth                     *authDict `json:"auth"`
	Username                 string    `json:"username"`
	Password                 string    `json:"password"`
	DeviceID                 string    `json:"device_id"`
	InitialDeviceDisplayName string    `json:"initial_device_display_name"`
	InhibitLogin             bool      `json:"inhibit_login"`
	RefreshToken             bool      `json:"refresh_token"`
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := a.limiter.allow("register", clientIP(r)); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var req registerRequest
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = "user"
	}
	if kind != "user" && kind != "guest" {
		httpapi.Fail(w, r, httpapi.InvalidParam("kind must be user or guest"))
		return
	}
	if a.cfg.Registration == RegistrationClosed {
		httpapi.Fail(w, r, httpapi.Forbidden("registration is closed on this server"))
		return
	}
	if kind == "guest" {
		a.registerGuest(w, r, req)
		return
	}
	localpart := strings.ToLower(req.Username)
	if localpart == "" {
		localpart = "u" + strings.ToLower(randomToken(6))
		localpart = strings.Map(func(c rune) rune {
			if id.ValidLocalpart(string(c)) {
				return c
			}
			return 'x'
		}, localpart)
	}
	if err := a.checkNewLocalpart(r, localpart); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if len(req.Password) > password.MaxLength {
		httpapi.Fail(w, r, httpapi.InvalidParam("password is longer than %d bytes", password.MaxLength))
		return
	}

	// User-interactive auth: dummy for open registration, a registration
	// token in token mode.
	stage := "m.login.dummy"
	if a.cfg.Registration == RegistrationToken {
		stage = "m.login.registration_token"
	}
	flows := [][]string{{stage}}
	if req.Auth == nil || req.Auth.Type == "" {
		session := req.Auth.sessionOrNew()
		httpapi.Fail(w, r, uiaChallenge(session, flows, nil, nil))
		return
	}
	switch {
	case req.Auth.Type != stage:
		httpapi.Fail(w, r, uiaChallenge(req.Auth.sessionOrNew(), flows, nil, httpapi.Forbidden("unsupported auth type %q", req.Auth.Type)))
		return
	case stage == "m.login.registration_token":
		ok, err := a.db.UseRegistrationToken(ctx, req.Auth.Token, a.now().UnixMilli())
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if !ok {
			httpapi.Fail(w, r, uiaChallenge(req.Auth.sessionOrNew(), flows, nil, httpapi.Custom(http.StatusUnauthorized, "M_FORBIDDEN", "invalid registration token")))
			return
		}
	}

	hash := ""
	if req.Password != "" {
		h, err := password.Hash(req.Password, a.cfg.BcryptCost)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		hash = h
	}
	userID := "@" + localpart + ":" + a.cfg.ServerName
	if err := a.db.CreateAccount(ctx, storage.Account{UserID: userID, Localpart: localpart, PasswordHash: hash, DisplayName: localpart}, a.now().UnixMilli()); err != nil {
		if errors.Is(err, storage.ErrExists) {
			httpapi.Fail(w, r, httpapi.UserInUse())
			return
		}
		httpapi.Fail(w, r, err)
		return
	}
	resp := map[string]any{"user_id": userID, "home_server": a.cfg.ServerName}
	if !req.InhibitLogin {
		s, err := a.newSession(r, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		for k, v := range s {
			resp[k] = v
		}
	}
	httpapi.Respond(w, http.StatusOK, resp)
}

func (d *authDict) sessionOrNew() string {
	if d != nil && d.Session != "" {
		return d.Session
	}
	return randomToken(12)
}

func (a *API) registerGuest(w http.ResponseWriter, r *http.Request, req registerRequest) {
	localpart := "guest-" + strings.ToLower(strings.Map(func(c rune) rune {
		if c == '-' || c == '_' {
			return '0'
		}
		return c
	}, randomToken(9)))
	userID := "@" + localpart + ":" + a.cfg.ServerName
	if err := a.db.CreateAccount(r.Context(), storage.Account{UserID: userID, Localpart: localpart, IsGuest: true}, a.now().UnixMilli()); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s, err := a.newSession(r, userID, "", req.InitialDeviceDisplayName, false)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s["user_id"], s["home_server"] = userID, a.cfg.ServerName
	httpapi.Respond(w, http.StatusOK, s)
}

// checkNewLocalpart validates a requested localpart and its availability.
func (a *API) checkNewLocalpart(r *http.Request, localpart string) error {
	if !id.ValidLocalpart(localpart) {
		return httpapi.InvalidUsername("user names may only contain a-z, 0-9 and . _ = - / +")
	}
	if len("@"+localpart+":"+a.cfg.ServerName) > id.MaxLength {
		return httpapi.InvalidUsername("user name is too long")
	}
	if strings.HasPrefix(localpart, "guest-") || strings.HasPrefix(localpart, "_") {
		return httpapi.Custom(http.StatusBadRequest, "M_EXCLUSIVE", "that user name is reserved")
	}
	taken, err := a.db.LocalpartTaken(r.Context(), localpart)
	if err != nil {
		return err
	}
	if taken {
		return httpapi.UserInUse()
	}
	return nil
}

func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) {
	if err := a.limiter.allow("register", clientIP(r)); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		httpapi.Fail(w, r, httpapi.MissingParam("username is required"))
		return
	}
	if err := a.checkNewLocalpart(r, strings.ToLower(username)); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]bool{"available": true})
}

func (a *API) registrationTokenValidity(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	if token == "" {
		httpapi.Fail(w, r, httpapi.MissingParam("token is required"))
		return
	}
	ok, err := a.db.RegistrationTokenValid(r.Context(), token, a.now().UnixMilli())
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]bool{"valid": ok})
}

// newSession creates a device (or reuses the given one) with fresh tokens
// and returns the login response fields.
func (a *API) newSession(r *http.Request, userID, deviceID, displayName string, wantRefresh bool) (map[string]any, error) {
	if deviceID == "" {
		deviceID = strings.ToUpper(randomToken(7))
		deviceID = strings.NewReplacer("-", "A", "_", "B").Replace(deviceID)
	}
	if len(deviceID) > 255 {
		return nil, httpapi.InvalidParam("device_id is too long")
	}
	access := "syt_" + randomToken(30)
	refresh := ""
	var expires int64
	resp := map[string]any{"access_token": access, "device_id": deviceID, "user_id": userID, "home_server": a.cfg.ServerName}
	if wantRefresh && a.cfg.AccessTokenLifetime > 0 {
		refresh = "syr_" + randomToken(30)
		expires = a.now().Add(a.cfg.AccessTokenLifetime).UnixMilli()
		resp["refresh_token"] = refresh
		resp["expires_in_ms"] = a.cfg.AccessTokenLifetime.Milliseconds()
	}
	if err := a.db.CreateSession(r.Context(), userID, deviceID, displayName, access, refresh, expires, a.now().UnixMilli()); err != nil {
		return nil, err
	}
	return resp, nil
}

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	httpapi.Respond(w, http.StatusOK, map[string]any{"flows": append([]map[string]any{
		{"type": "m.login.password"}, {"type": "m.login.token"},
	}, a.ssoFlows()...)})
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"`
	Password                 string          `json:"password"`
	Token                    string          `json:"token"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

// userIDFrom turns a login identifier (localpart or full ID) into a user ID.
func (a *API) userIDFrom(ident *userIdentifier, user string) (string, *httpapi.Error) {
	if ident != nil {
		if ident.Type != "m.id.user" {
			return "", httpapi.Custom(http.StatusBadRequest, "M_UNKNOWN", "unsupported identifier type %q", ident.Type)
		}
		user = ident.User
	}
	if user == "" {
		return "", httpapi.MissingParam("identifier.user is required")
	}
	if !strings.HasPrefix(user, "@") {
		user = "@" + strings.ToLower(user) + ":" + a.cfg.ServerName
	}
	u, err := id.ParseUserID(user)
	if err != nil || u.ServerName != a.cfg.ServerName {
		return "", httpapi.Forbidden("invalid user name or password")
	}
	// Localparts are registered in lower case; a full ID typed with capitals
	// names the same account, as a bare localpart does.
	return "@" + strings.ToLower(u.Localpart) + ":" + u.ServerName, nil
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := a.limiter.allow("login", clientIP(r)); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var req loginRequest
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var userID string
	switch req.Type {
	case "m.login.password":
		uid, merr := a.userIDFrom(req.Identifier, req.User)
		if merr != nil {
			httpapi.Fail(w, r, merr)
			return
		}
		acct, err := a.db.AccountByUserID(ctx, uid)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && (acct.PasswordHash == "" || acct.Deactivated)) {
			httpapi.Fail(w, r, httpapi.Forbidden("invalid user name or password"))
			return
		}
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		if !password.Check(acct.PasswordHash, req.Password) {
			httpapi.Fail(w, r, httpapi.Forbidden("invalid user name or password"))
			return
		}
		userID = uid
	case "m.login.token":
		uid, err := a.db.UseLoginToken(ctx, req.Token, a.now().UnixMilli())
		if errors.Is(err, storage.ErrNotFound) {
			httpapi.Fail(w, r, httpapi.Forbidden("invalid or expired login token"))
			return
		}
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
		userID = uid
	case "":
		httpapi.Fail(w, r, httpapi.MissingParam("type is required"))
		return
	default:
		httpapi.Fail(w, r, httpapi.Unknown("unsupported login type %q", req.Type))
		return
	}
	s, err := a.newSession(r, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	s["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": strings.TrimRight(a.baseURL(), "/")}}
	httpapi.Respond(w, http.StatusOK, s)
}

func (a *API) baseURL() string {
	if a.cfg.PublicURL != "" {
		return a.cfg.PublicURL
	}
	return "http://" + a.cfg.ServerName
}

func (a *API) refresh(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.RefreshToken == "" {
		httpapi.Fail(w, r, httpapi.MissingParam("refresh_token is required"))
		return
	}
	access, refresh := "syt_"+randomToken(30), "syr_"+randomToken(30)
	lifetime := a.cfg.AccessTokenLifetime
	if lifetime == 0 {
		lifetime = time.Hour
	}
	_, _, err := a.db.Refresh(r.Context(), req.RefreshToken, access, refresh, a.now().Add(lifetime).UnixMilli(), a.now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.UnknownToken(false))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"access_token": access, "refresh_token": refresh, "expires_in_ms": lifetime.Milliseconds()})
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) {
	rq := requester(r)
	httpapi.Respond(w, http.StatusOK, map[string]any{"user_id": rq.UserID, "device_id": rq.DeviceID, "is_guest": rq.IsGuest})
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	rq := requester(r)
	err := a.db.DeleteDevices(r.Context(), rq.UserID, []string{rq.DeviceID})
	a.tokens.forgetUser(requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (a *API) logoutAll(w http.ResponseWriter, r *http.Request) {
	err := a.db.DeleteDevices(r.Context(), requester(r).UserID, nil)
	a.tokens.forgetUser(requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

// checkPasswordUIA runs user-interactive auth for sensitive operations:
// m.login.password, or m.login.sso for accounts that sign in with a forge
// (checkUserUIA, in sso.go). It returns nil when the request may go ahead.
func (a *API) checkPasswordUIA(r *http.Request, rq *httpapi.Requester, auth *authDict) error {
	return a.checkUserUIA(r, rq, auth)
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request) {
	rq := requester(r)
	var req struct {
		Auth          *authDict `json:"auth"`
		NewPassword   string    `json:"new_password"`
		LogoutDevices *bool     `json:"logout_devices"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := a.checkPasswordUIA(r, rq, req.Auth); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.NewPassword == "" || len(req.NewPassword) > password.MaxLength {
		httpapi.Fail(w, r, httpapi.Custom(http.StatusBadRequest, "M_WEAK_PASSWORD", "new_password must be 1 to %d bytes", password.MaxLength))
		return
	}
	h, err := password.Hash(req.NewPassword, a.cfg.BcryptCost)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := a.db.SetPassword(r.Context(), rq.UserID, h); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.LogoutDevices == nil || *req.LogoutDevices {
		err := a.db.DeleteOtherSessions(r.Context(), rq.UserID, rq.DeviceID)
		a.tokens.forgetUser(requester(r).UserID)
		if err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (a *API) deactivate(w http.ResponseWriter, r *http.Request) {
	rq := requester(r)
	var req struct {
		Auth  *authDict `json:"auth"`
		Erase bool      `json:"erase"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if err := a.checkPasswordUIA(r, rq, req.Auth); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	err := a.db.Deactivate(r.Context(), rq.UserID)
	a.tokens.forgetUser(requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	a.leaveAllRooms(r.Context(), rq.UserID)
	httpapi.Respond(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

func deviceJSON(d storage.Device) map[string]any {
	m := map[string]any{"device_id": d.DeviceID}
	if d.DisplayName != "" {
		m["display_name"] = d.DisplayName
	}
	if d.LastSeenTS != 0 {
		m["last_seen_ts"] = d.LastSeenTS
	}
	if d.LastSeenIP != "" {
		m["last_seen_ip"] = d.LastSeenIP
	}
	return m
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	devs, err := a.db.Devices(r.Context(), requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	out := make([]map[string]any, len(devs))
	for i, d := range devs {
		out[i] = deviceJSON(d)
	}
	httpapi.Respond(w, http.StatusOK, map[string]any{"devices": out})
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	devs, err := a.db.Devices(r.Context(), requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	for _, d := range devs {
		if d.DeviceID == httpapi.PathParam(r, "deviceID") {
			httpapi.Respond(w, http.StatusOK, deviceJSON(d))
			return
		}
	}
	httpapi.Fail(w, r, httpapi.NotFound("no such device"))
}

func (a *API) renameDevice(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.DisplayName == nil {
		httpapi.Respond(w, http.StatusOK, struct{}{})
		return
	}
	if len(*req.DisplayName) > 255 {
		httpapi.Fail(w, r, httpapi.InvalidParam("display_name is longer than 255 bytes"))
		return
	}
	err := a.db.RenameDevice(r.Context(), requester(r).UserID, httpapi.PathParam(r, "deviceID"), *req.DisplayName)
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.Fail(w, r, httpapi.NotFound("no such device"))
		return
	}
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	a.deleteDeviceList(w, r, []string{httpapi.PathParam(r, "deviceID")}, nil)
}

func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request) {
	body, err := httpapi.ReadBody(r, httpapi.DefaultMaxBody)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	var req struct {
		Devices []string `json:"devices"`
	}
	if err := httpapi.Unmarshal(body, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	if req.Devices == nil {
		httpapi.Fail(w, r, httpapi.MissingParam("devices is required"))
		return
	}
	a.deleteDeviceList(w, r, req.Devices, body)
}

func (a *API) deleteDeviceList(w http.ResponseWriter, r *http.Request, devices []string, body []byte) {
	if body == nil {
		var err error
		if body, err = httpapi.ReadBody(r, httpapi.DefaultMaxBody); err != nil {
			httpapi.Fail(w, r, err)
			return
		}
	}
	var req struct {
		Auth *authDict `json:"auth"`
	}
	if err := httpapi.Unmarshal(body, &req); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	rq := requester(r)
	if err := a.checkPasswordUIA(r, rq, req.Auth); err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	err := a.db.DeleteDevices(r.Context(), rq.UserID, devices)
	a.tokens.forgetUser(requester(r).UserID)
	if err != nil {
		httpapi.Fail(w, r, err)
		return
	}
	httpapi.Respond(w, http.StatusOK, struct{}{})
}
