package accountdata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Kind is a kind of push rule. Kinds are evaluated in the order of the
// constants.
type Kind string

// The kinds of push rules.
const (
	KindOverride  Kind = "override"
	KindContent   Kind = "content"
	KindRoom      Kind = "room"
	KindSender    Kind = "sender"
	KindUnderride Kind = "underride"
)

// kinds lists the kinds in evaluation order.
func kinds() [5]Kind {
	return [5]Kind{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}
}

func (k Kind) valid() bool {
	all := kinds()
	return slices.Contains(all[:], k)
}

// Ruleset is a user's push rules, each kind's rules in priority order.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Rules returns a pointer to the list of a kind's rules (nil for an unknown
// kind).
func (rs *Ruleset) Rules(k Kind) *[]Rule {
	switch k {
	case KindOverride:
		return &rs.Override
	case KindContent:
		return &rs.Content
	case KindRoom:
		return &rs.Room
	case KindSender:
		return &rs.Sender
	case KindUnderride:
		return &rs.Underride
	}
	return nil
}

// Find returns a rule by kind and ID.
func (rs *Ruleset) Find(k Kind, ruleID string) (Rule, bool) {
	list := rs.Rules(k)
	if list == nil {
		return Rule{}, false
	}
	for _, r := range *list {
		if r.RuleID == ruleID {
			return r, true
		}
	}
	return Rule{}, false
}

// Rule is a push rule as the client-server API shows it.
type Rule struct {
	RuleID  string `json:"rule_id"`
	Default bool   `json:"default"`
	Enabled bool   `json:"enabled"`
	// Conditions of override and underride rules; nil for the other kinds
	// (omitted), empty for a rule that always matches (shown as []).
	Conditions []Condition `json:"conditions,omitzero"`
	// Pattern of content rules.
	Pattern string   `json:"pattern,omitempty"`
	Actions []Action `json:"actions"`
}

// Condition is a condition of an override or underride rule. Only the
// parameters the spec defines are kept: a condition of a kind this server
// does not know never matches anyway.
type Condition struct {
	Kind string `json:"kind"`
	Key  string `json:"key,omitempty"`
	// Pattern is a pointer because "" is a meaningful pattern (the
	// tombstone rule's state_key).
	Pattern *string `json:"pattern,omitempty"`
	Is      string  `json:"is,omitempty"`
	// Value of event_property_is and event_property_contains, as JSON;
	// "null" is a value, nil means absent.
	Value json.RawMessage `json:"value,omitempty"`
}

// Action is a push rule action: "notify", or setting a tweak.
type Action struct {
	// Name is "notify" or "set_tweak" (or, in a rule a client has not
	// validated, anything else, which does nothing).
	Name string
	// Tweak and Value of set_tweak; Value is nil when absent.
	Tweak string
	Value json.RawMessage
}

// MarshalJSON renders an action: a bare string, or a set_tweak object.
func (a Action) MarshalJSON() ([]byte, error) {
	if a.Name != "set_tweak" {
		return json.Marshal(a.Name)
	}
	m := map[string]json.RawMessage{}
	tw, err := json.Marshal(a.Tweak)
	if err != nil {
		return nil, err
	}
	m["set_tweak"] = tw
	if a.Value != nil {
		m["value"] = a.Value
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads an action: a string, or an object with a string
// set_tweak (the only parameterised action).
func (a *Action) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err == nil {
		*a = Action{Name: name}
		return nil
	}
	var obj struct {
		SetTweak *string         `json:"set_tweak"`
		Value    json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &obj); err != nil || obj.SetTweak == nil {
		return fmt.Errorf("an action must be a string or an object with a string set_tweak")
	}
	*a = Action{Name: "set_tweak", Tweak: *obj.SetTweak, Value: obj.Value}
	return nil
}

// userIDPlaceholder is how the spec's rule definitions write the user's ID.
const userIDPlaceholder = `"[the user's Matrix ID]"`

// defaultRulesJSON are the server-default rules of the current spec version
// (v1.17 removed the legacy body-mention rules .m.rule.contains_user_name,
// .m.rule.contains_display_name and .m.rule.roomnotif, so there are no
// default content rules). The definitions are the spec's, data for data, so
// they can be compared with it side by side.
const defaultRulesJSON = `{
"override": [
{
    "rule_id": ".m.rule.master",
    "default": true,
    "enabled": false,
    "conditions": [],
    "actions": []
},
{
    "rule_id": ".m.rule.suppress_notices",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "event_match",
            "key": "content.msgtype",
            "pattern": "m.notice"
        }
    ],
    "actions": []
},
{
    "rule_id": ".m.rule.invite_for_me",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "key": "type",
            "kind": "event_match",
            "pattern": "m.room.member"
        },
        {
            "key": "content.membership",
            "kind": "event_match",
            "pattern": "invite"
        },
        {
            "key": "state_key",
            "kind": "event_match",
            "pattern": "[the user's Matrix ID]"
        }
    ],
    "actions": [
       "notify",
        {
            "set_tweak": "sound",
            "value": "default"
        }
    ]
},
{
    "rule_id": ".m.rule.member_event",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "key": "type",
            "kind": "event_match",
            "pattern": "m.room.member"
        }
    ],
    "actions": []
},
{
    "rule_id": ".m.rule.is_user_mention",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "event_property_contains",
            "key": "content.m\\.mentions.user_ids",
            "value": "[the user's Matrix ID]"
        }
    ],
    "actions": [
        "notify",
        {
            "set_tweak": "sound",
            "value": "default"
        },
        {
            "set_tweak": "highlight"
        }
    ]
},
{
    "rule_id": ".m.rule.is_room_mention",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "event_property_is",
            "key": "content.m\\.mentions.room",
            "value": true
        },
        {
            "kind": "sender_notification_permission",
            "key": "room"
        }
    ],
    "actions": [
        "notify",
        {
            "set_tweak": "highlight"
        }
    ]
},
{
    "rule_id": ".m.rule.tombstone",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "event_match",
            "key": "type",
            "pattern": "m.room.tombstone"
        },
        {
            "kind": "event_match",
            "key": "state_key",
            "pattern": ""
        }
    ],
    "actions": [
        "notify",
        {
            "set_tweak": "highlight"
        }
    ]
},
{
    "rule_id": ".m.rule.reaction",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "event_match",
            "key": "type",
            "pattern": "m.reaction"
        }
    ],
    "actions": []
},
{
    "rule_id": ".m.rule.room.server_acl",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "event_match",
            "key": "type",
            "pattern": "m.room.server_acl"
        },
        {
            "kind": "event_match",
            "key": "state_key",
            "pattern": ""
        }
    ],
    "actions": []
},
{
    "rule_id": ".m.rule.suppress_edits",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "event_property_is",
            "key": "content.m\\.relates_to.rel_type",
            "value": "m.replace"
        }
    ],
    "actions": []
}
],
"content": [],
"room": [],
"sender": [],
"underride": [
{
    "rule_id": ".m.rule.call",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "key": "type",
            "kind": "event_match",
            "pattern": "m.call.invite"
        }
    ],
    "actions": [
        "notify",
        {
            "set_tweak": "sound",
            "value": "ring"
        }
    ]
},
{
    "rule_id": ".m.rule.encrypted_room_one_to_one",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "room_member_count",
            "is": "2"
        },
        {
            "kind": "event_match",
            "key": "type",
            "pattern": "m.room.encrypted"
        }
    ],
    "actions": [
        "notify",
        {
            "set_tweak": "sound",
            "value": "default"
        }
    ]
},
{
    "rule_id": ".m.rule.room_one_to_one",
    "default": true,
    "enabled": true,
    "conditions": [
        {
            "kind": "room_member_count",
            "is": "2"
        },
        {
            "kind": "event_match",
            "key": "type",
            "pattern": "m.room.message"
        }
    ],
    "actions": [
        "notify",
        {
            "set_tweak": "sound",
            "value": "default"
        }
    ]
},
{
     "rule_id": ".m.rule.message",
     "default": true,
     "enabled": true,
     "conditions": [
         {
             "kind": "event_match",
             "key": "type",
             "pattern": "m.room.message"
         }
     ],
     "actions": [
         "notify"
     ]
},
{
     "rule_id": ".m.rule.encrypted",
     "default": true,
     "enabled": true,
     "conditions": [
         {
             "kind": "event_match",
             "key": "type",
             "pattern": "m.room.encrypted"
         }
     ],
     "actions": [
         "notify"
     ]
}
]
}`

// masterRuleID is the one default rule that outranks the user's own rules.
const masterRuleID = ".m.rule.master"

// DefaultRuleset returns the server-default rules for a user, fresh on
// every call (callers may change the result).
func DefaultRuleset(userID string) (Ruleset, error) {
	uid, err := json.Marshal(userID)
	if err != nil {
		return Ruleset{}, fmt.Errorf("encoding the user ID: %w", err)
	}
	data := bytes.ReplaceAll([]byte(defaultRulesJSON), []byte(userIDPlaceholder), uid)
	var rs Ruleset
	if err := json.Unmarshal(data, &rs); err != nil {
		return Ruleset{}, fmt.Errorf("the default push rules do not parse: %w", err)
	}
	return rs, nil
}

// userRules is what a user changed in their push rules, as stored: their
// own rules of each kind, most important first, and their changes to
// server-default rules. Only changes are stored so that the defaults of a
// newer server version reach every user.
type userRules struct {
	Rules    map[Kind][]Rule          `json:"rules,omitempty"`
	Defaults map[string]defaultChange `json:"defaults,omitempty"` // by defaultKey

	// defaults are the server's rules, to tell them from unknown ones when
	// changing; not stored.
	defaults Ruleset
}

// defaultChange is a user's change to a server-default rule.
type defaultChange struct {
	Enabled *bool `json:"enabled,omitempty"`
	// Actions replaces the rule's actions unless nil (an empty list is a
	// change: the rule then does nothing).
	Actions []Action `json:"actions,omitzero"`
}

func defaultKey(k Kind, ruleID string) string { return string(k) + "/" + ruleID }

// parseUserRules reads stored changes (nil: none).
func parseUserRules(data []byte) (*userRules, error) {
	u := &userRules{}
	if data == nil {
		return u, nil
	}
	if err := json.Unmarshal(data, u); err != nil {
		return nil, fmt.Errorf("stored push rules: %w", err)
	}
	return u, nil
}

// effective merges a user's changes over the defaults: the master rule
// first, then in each kind the user's rules before the server's.
func effective(userID string, u *userRules) (Ruleset, error) {
	defs, err := DefaultRuleset(userID)
	if err != nil {
		return Ruleset{}, err
	}
	var out Ruleset
	for _, k := range kinds() {
		merged := []Rule{}
		var rest []Rule
		for _, r := range *defs.Rules(k) {
			if c, ok := u.Defaults[defaultKey(k, r.RuleID)]; ok {
				if c.Enabled != nil {
					r.Enabled = *c.Enabled
				}
				if c.Actions != nil {
					r.Actions = slices.Clone(c.Actions)
				}
			}
			if r.RuleID == masterRuleID {
				merged = append(merged, r)
			} else {
				rest = append(rest, r)
			}
		}
		merged = append(merged, u.Rules[k]...)
		merged = append(merged, rest...)
		*out.Rules(k) = merged
	}
	return out, nil
}

// isServerDefault reports whether a rule ID is reserved for the server's
// rules (the spec: they start with a dot).
func isServerDefault(ruleID string) bool { return strings.HasPrefix(ruleID, ".") }
