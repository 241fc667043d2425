package auth

import (
	"errors"
	"fmt"

	"plaza/homeserver/event"
	"plaza/homeserver/id"
)

// checkMember is the m.room.member rule (5 in v12, 4 before).
func (c *checker) checkMember() error {
	ev := c.ev
	sk := ev.StateKey()
	if sk == nil {
		return c.deny("member event without a state_key", 5, 1)
	}
	content := ev.Content()
	raw, ok := get(content, "membership")
	if !ok {
		return c.deny("content has no membership", 5, 1)
	}
	if raw[0] != '"' {
		return c.deny(fmt.Sprintf("membership %s is not a string", raw), 5, 8)
	}
	membership := membershipOf(content)
	// Rule 5.2, the join_authorised_via_users_server signature, needs keys:
	// see CheckJoinAuthorisedSignature.
	target := *sk
	switch {
	case membership == join:
		return c.checkJoin(target, content)
	case membership == invite:
		return c.checkInvite(target, content)
	case membership == leave:
		return c.checkLeave(target)
	case membership == ban:
		return c.checkBan(target)
	case membership == knock && c.v.Knocking:
		return c.checkKnock(target)
	}
	return c.deny(fmt.Sprintf("unknown membership %q", membership), 5, 8)
}

// joinRule returns the room's join rule. A room without an
// m.room.join_rules event, or one without a join_rule, is invite-only, as
// the first servers decided and the rest followed; a non-string join_rule
// matches no rule and so allows nobody in.
func (c *checker) joinRule() string {
	jr := c.state(event.TypeJoinRules, "")
	if jr == nil {
		return ruleInvite
	}
	raw, ok := get(jr.Content(), "join_rule")
	if !ok {
		return ruleInvite
	}
	if len(raw) >= 2 && raw[0] == '"' {
		// The known rules come back as constants: no allocation.
		switch string(raw[1 : len(raw)-1]) {
		case rulePublic:
			return rulePublic
		case ruleInvite:
			return ruleInvite
		case ruleKnock:
			return ruleKnock
		case ruleRestricted:
			return ruleRestricted
		case ruleKnockRestricted:
			return ruleKnockRestricted
		}
	}
	s, _ := getString(jr.Content(), "join_rule")
	return s
}

// checkJoin is rule 5.3.
func (c *checker) checkJoin(target string, content []byte) error {
	ev := c.ev
	// 5.3.1: the creator's own first join, right after the create event. Only
	// the create event's sender (or content.creator before v11): v12's
	// additional creators join like anyone else.
	if prev := ev.PrevEventIDs(); len(prev) == 1 && prev[0] == c.create.ev.ID() &&
		c.create.creator != "" && target == c.create.creator {
		return nil
	}
	if ev.Sender() != target {
		return c.deny("sender does not match state_key", 5, 3, 2)
	}
	current := c.membership(target)
	if current == ban {
		return c.deny("sender is banned", 5, 3, 3)
	}
	rule := c.joinRule()
	switch {
	case rule == ruleInvite || rule == ruleKnock && c.v.Knocking:
		if current == invite || current == join {
			return nil
		}
		return c.deny(fmt.Sprintf("join rule is %q and the user is neither invited nor joined", rule), 5, 3, 7)
	case rule == ruleRestricted && c.v.RestrictedJoins || rule == ruleKnockRestricted && c.v.KnockRestricted:
		if current == invite || current == join {
			return nil
		}
		authoriser, ok := getString(content, "join_authorised_via_users_server")
		if !ok {
			return c.deny(fmt.Sprintf("join rule is %q and no join_authorised_via_users_server is given", rule), 5, 3, 5, 2)
		}
		if m := c.membership(authoriser); m != join {
			return c.deny(fmt.Sprintf("authorising user %s is not joined (membership %q)", authoriser, m), 5, 3, 5, 2)
		}
		l, err := c.userLevel(authoriser, 5, 3, 5, 2)
		if err != nil {
			return err
		}
		inviteLevel, err := c.prop(propInvite, 5, 3, 5, 2)
		if err != nil {
			return err
		}
		if l < inviteLevel {
			return c.deny(fmt.Sprintf("authorising user %s has power level %d, below the invite level %d", authoriser, l, inviteLevel), 5, 3, 5, 2)
		}
		return nil
	case rule == rulePublic:
		return nil
	}
	return c.deny(fmt.Sprintf("join rule %q does not allow joining", rule), 5, 3, 7)
}

// checkInvite is rule 5.4.
func (c *checker) checkInvite(target string, content []byte) error {
	ev := c.ev
	if tpi, ok := get(content, "third_party_invite"); ok {
		return c.checkThirdPartyInvite(target, tpi)
	}
	if m := c.membership(ev.Sender()); m != join {
		return c.deny(fmt.Sprintf("sender is not joined (membership %q)", m), 5, 4, 2)
	}
	if m := c.membership(target); m == join || m == ban {
		return c.deny(fmt.Sprintf("target's membership is %q", m), 5, 4, 3)
	}
	l, err := c.userLevel(ev.Sender(), 5, 4, 4)
	if err != nil {
		return err
	}
	inviteLevel, err := c.prop(propInvite, 5, 4, 4)
	if err != nil {
		return err
	}
	if l < inviteLevel {
		return c.deny(fmt.Sprintf("sender's power level %s is below the invite level %d", levelString(l), inviteLevel), 5, 4, 5)
	}
	return nil
}

// checkThirdPartyInvite is rule 5.4.1: an invite that redeems an
// m.room.third_party_invite. The sender's own membership is deliberately not
// checked: it was checked when the m.room.third_party_invite was sent.
func (c *checker) checkThirdPartyInvite(target string, tpi []byte) error {
	if c.membership(target) == ban {
		return c.deny("target is banned", 5, 4, 1, 1)
	}
	tpiObj, err := object(tpi)
	if err != nil {
		return c.deny("third_party_invite is not an object", 5, 4, 1, 2)
	}
	signedRaw, ok := tpiObj["signed"]
	if !ok {
		return c.deny("third_party_invite has no signed", 5, 4, 1, 2)
	}
	signed, err := object(signedRaw)
	if err != nil {
		return c.deny("third_party_invite.signed is not an object", 5, 4, 1, 2)
	}
	mxid, okM := str(signed, "mxid")
	token, okT := str(signed, "token")
	if !okM || !okT {
		return c.deny("signed lacks a string mxid or token", 5, 4, 1, 3)
	}
	if mxid != target {
		return c.deny("signed.mxid does not match state_key", 5, 4, 1, 4)
	}
	inviteEv := c.state(event.TypeThirdPartyInvite, token)
	if inviteEv == nil {
		return c.deny("no m.room.third_party_invite for the token", 5, 4, 1, 5)
	}
	if inviteEv.Sender() != c.ev.Sender() {
		return c.deny("sender did not send the m.room.third_party_invite", 5, 4, 1, 6)
	}
	if verifyThirdPartySigned(signedRaw, inviteEv.Content()) {
		return nil
	}
	return c.deny("no signature in signed matches a public key of the m.room.third_party_invite", 5, 4, 1, 8)
}

// checkLeave is rule 5.5: leaving, rejecting an invite, rescinding a knock,
// kicking, and unbanning.
func (c *checker) checkLeave(target string) error {
	ev := c.ev
	senderM := c.membership(ev.Sender())
	if ev.Sender() == target {
		if senderM == invite || senderM == join || senderM == knock && c.v.Knocking {
			return nil
		}
		return c.deny(fmt.Sprintf("cannot leave with membership %q", senderM), 5, 5, 1)
	}
	if senderM != join {
		return c.deny(fmt.Sprintf("sender is not joined (membership %q)", senderM), 5, 5, 2)
	}
	senderLevel, err := c.userLevel(ev.Sender(), 5, 5, 3)
	if err != nil {
		return err
	}
	if c.membership(target) == ban {
		banLevel, err := c.prop(propBan, 5, 5, 3)
		if err != nil {
			return err
		}
		if senderLevel < banLevel {
			return c.deny(fmt.Sprintf("target is banned and the sender's power level %s is below the ban level %d", levelString(senderLevel), banLevel), 5, 5, 3)
		}
	}
	targetLevel, err := c.userLevel(target, 5, 5, 4)
	if err != nil {
		return err
	}
	kickLevel, err := c.prop(propKick, 5, 5, 4)
	if err != nil {
		return err
	}
	if senderLevel >= kickLevel && targetLevel < senderLevel {
		return nil
	}
	return c.deny(fmt.Sprintf("sender's power level %s needs to reach the kick level %d and exceed the target's %s",
		levelString(senderLevel), kickLevel, levelString(targetLevel)), 5, 5, 5)
}

// checkBan is rule 5.6.
func (c *checker) checkBan(target string) error {
	ev := c.ev
	if m := c.membership(ev.Sender()); m != join {
		return c.deny(fmt.Sprintf("sender is not joined (membership %q)", m), 5, 6, 1)
	}
	senderLevel, err := c.userLevel(ev.Sender(), 5, 6, 2)
	if err != nil {
		return err
	}
	targetLevel, err := c.userLevel(target, 5, 6, 2)
	if err != nil {
		return err
	}
	banLevel, err := c.prop(propBan, 5, 6, 2)
	if err != nil {
		return err
	}
	if senderLevel >= banLevel && targetLevel < senderLevel {
		return nil
	}
	return c.deny(fmt.Sprintf("sender's power level %s needs to reach the ban level %d and exceed the target's %s",
		levelString(senderLevel), banLevel, levelString(targetLevel)), 5, 6, 3)
}

// checkKnock is rule 5.7 (v7+).
func (c *checker) checkKnock(target string) error {
	ev := c.ev
	rule := c.joinRule()
	if rule != ruleKnock && (rule != ruleKnockRestricted || !c.v.KnockRestricted) {
		return c.deny(fmt.Sprintf("join rule %q does not allow knocking", rule), 5, 7, 1)
	}
	if ev.Sender() != target {
		return c.deny("sender does not match state_key", 5, 7, 2)
	}
	if m := c.membership(ev.Sender()); m == ban || m == invite || m == join {
		return c.deny(fmt.Sprintf("cannot knock with membership %q", m), 5, 7, 4)
	}
	return nil
}

func levelString(l int64) string {
	if l == Infinite {
		return "infinite (creator)"
	}
	return fmt.Sprint(l)
}

// CheckJoinAuthorisedSignature applies the rule that a member event whose
// content has join_authorised_via_users_server must be validly signed by the
// homeserver of that user (rule 4.2, 5.2 in v12; v8+). Allowed cannot apply
// it, as it holds no keys: the caller calls this where it verifies
// signatures, with verify checking ev's signature by the named server (and
// fetching that server's keys as needed). The rule covers every membership,
// not only joins, as the spec words it. It returns nil when the rule does not
// apply.
func CheckJoinAuthorisedSignature(ev *event.Event, verify func(server string) error) error {
	if ev == nil || ev.Version() == nil || verify == nil {
		return errors.New("auth: CheckJoinAuthorisedSignature needs an event with a room version and a verifier")
	}
	v := ev.Version()
	if !v.RestrictedJoins || ev.Type() != event.TypeMember {
		return nil
	}
	if _, ok := get(ev.Content(), "join_authorised_via_users_server"); !ok {
		return nil
	}
	user, ok := getString(ev.Content(), "join_authorised_via_users_server")
	if !ok {
		return deny(v, "join_authorised_via_users_server is not a string", 5, 2)
	}
	uid, err := id.ParseUserID(user)
	if err != nil {
		return deny(v, "join_authorised_via_users_server: "+err.Error(), 5, 2)
	}
	if err := verify(uid.ServerName); err != nil {
		return deny(v, fmt.Sprintf("not validly signed by %s: %v", uid.ServerName, err), 5, 2)
	}
	return nil
}
