// Package templates holds Plaza's server-rendered pages as templ components
// (*.templ, compiled to *_templ.go by `make generate`) and the plain view
// models they take. The components know nothing of Matrix or storage: package
// web builds the models, so a page renders from memory.
package templates

// Page is what every page's layout needs.
type Page struct {
	Title       string
	Description string
	// CSS and JS are the fingerprinted asset URLs.
	CSS, JS string
	// User is the signed-in Matrix user ("" for an anonymous visitor).
	User string
	// SignIn lists where one can sign in; Next is where sign-in returns to.
	SignIn []Provider
	Next   string
}

// Provider is one sign-in button.
type Provider struct {
	ID, Name string
}

// Room is the room page.
type Room struct {
	Page
	RoomID  string
	Name    string
	Topic   string
	Alias   string
	Members int
	// Messages is the rendered message list (a run of Message items),
	// built once per snapshot and shared by every viewer.
	Messages []byte
	// Older links to the page of older messages ("" when there are none).
	Older string
	// Pos is the stream position the list is current to: live updates
	// resume after it.
	Pos int64
	// Live is the Server-Sent Events URL; Send and Join the composer's and
	// join button's form actions.
	Live, Send, Join string
	// Member is set when the signed-in user has joined the room (they get
	// the composer); otherwise a signed-in user gets a join button.
	Member bool
	// Archive is set when the page shows older messages (not the live end).
	Archive bool
}

// Message is one message of the timeline.
type Message struct {
	ID         string
	Sender     string
	SenderName string
	// Time is the UTC ISO 8601 time (the datetime attribute), TimeText its
	// server-side rendering (scripts localise it).
	Time, TimeText string
	// Body is sanitised HTML.
	Body    string
	Emote   bool
	Edited  bool
	Deleted bool
	// Replies are the thread's replies shown under their root.
	Replies []Message
}

// NoRoom is the page of a repository that has no room yet.
type NoRoom struct {
	Page
	Repo string
}

// NotFound is the page of anything that is not there (or may not be seen).
type NotFound struct {
	Page
	// AllowPrivate, if set, is where a signed-in visitor lets Plaza read
	// their private repositories: offered to those who have not, for any
	// repository they cannot see (it says nothing about this one).
	AllowPrivate string
}

// Home is the front page.
type Home struct {
	Page
}
