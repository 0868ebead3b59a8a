# tokenbudget's lean hook of `install --resident` without a Python start (see relay_perl.py).
#
#   perl relay.pl FOLDER DIRS NAME=VALUE|NAME ... -- PYTHON-RELAY-COMMAND... EVENT
#
# It does what tokenbudget/relay_hook.py does when the answerer answers: the event handed over
# relay.py's Unix socket in FOLDER, the answer printed. FOLDER and DIRS (the session's Claude
# config folders, as relay.py's JSON) were resolved at install from the environment variables
# named after them (NAME alone: it was unset). Whatever it cannot do exactly so (another
# environment, no answerer, a folder not the user's own, a non-ASCII project folder that is not
# UTF-8) it hands to the Python relay with the same stdin bytes; what happened after the event
# was sent (relay.ask's None, Dropped, TimeoutError) it tells it as `--relayed=...`, so that no
# event is decided twice. Core modules of perl-base only; no JSON module there.
use strict;

# On Linux, Socket's constants and address as they are: loading Socket costs ~7 ms of CPU (its
# shared object, Carp, warnings), three times perl's own start. Elsewhere, Socket.
my ($AF_UNIX, $SOCK_STREAM) = $^O eq 'linux' ? (1, 1)
    : do { require Socket; (Socket::AF_UNIX(), Socket::SOCK_STREAM()) };

my $SOCKET_NAME = 'answerer.sock';
my $MAX_PATH = 100;           # relay._MAX_PATH: sun_path is 108 bytes on Linux, 104 on macOS
my $TIMEOUT = 8;              # relay.TIMEOUT
my $MAX_REPLY = 1024 * 1024;  # relay._MAX_REPLY
my $MAX_EVENT = 8 * 1024 * 1024;  # what relay_hook reads of stdin
my %RELAYED = map { $_ => 1 } qw(SessionStart UserPromptSubmit SubagentStop SessionEnd);

my ($folder, $dirs, @rest) = @ARGV;
my ($cut) = grep { $rest[$_] eq '--' } 0 .. $#rest;
my @env_said = defined $cut ? @rest[0 .. $cut - 1] : ();
my @python = defined $cut ? @rest[$cut + 1 .. $#rest] : ();
my $event = @python ? $python[-1] : '';

binmode STDIN;
binmode STDOUT;
my $raw = '';
while (length $raw < $MAX_EVENT) {
    my $n = sysread STDIN, $raw, $MAX_EVENT - length $raw, length $raw;
    last unless $n;  # EOF, or an error: relay_hook reads what it can too
}

if (($ENV{TOKENBUDGET_DISABLE} // '') eq '1') {
    print "{}\n";
    exit 0;
}
hand_over('', $raw) unless @python && $RELAYED{$event} && same_environment() && private($folder);

my $project = $ENV{CLAUDE_PROJECT_DIR} // '';
hand_over('', $raw) unless utf8_text($project);
my $header = qq({"event": "$event", "session": "", "project": ) . quote($project)
    . qq(, "dirs": $dirs, "async_start": true}\n);

socket(my $sock, $AF_UNIX, $SOCK_STREAM, 0) or hand_over('', $raw);
my ($sent, $reply, $outcome) = (0, '', '');
my $ok = eval {
    local $SIG{ALRM} = sub { die "timeout\n" };
    local $SIG{PIPE} = 'IGNORE';
    alarm $TIMEOUT;
    connect_to($sock, $folder) or do { alarm 0; hand_over('', $raw) };
    my $out = $header . $raw;
    my $at = 0;
    while ($at < length $out) {
        my $n = syswrite $sock, $out, length($out) - $at, $at;
        die "send\n" unless defined $n;
        $at += $n;
    }
    shutdown $sock, 1 or die "send\n";
    $sent = 1;
    while (length $reply <= $MAX_REPLY) {
        my $n = sysread $sock, $reply, 65536, length $reply;
        die "recv\n" unless defined $n;
        last unless $n;
    }
    alarm 0;
    1;
};
alarm 0;
close $sock;
if (!$ok) {
    # As relay.ask: a timeout with nothing read is the answerer's (it may still decide the
    # event); an error once the event was sent is its death; anything else, no answerer.
    $outcome = $@ eq "timeout\n" ? ($reply eq '' ? 'late' : 'none') : ($sent ? 'dropped' : 'none');
    hand_over($outcome, $raw);
}
hand_over($sent ? 'dropped' : 'none', $raw) unless $reply =~ /\A\{/ && $reply =~ /\}\z/;
# An async SessionStart prints {}: what the answerer said instead, the Python relay logs.
hand_over('start', $reply) if $event eq 'SessionStart' && $reply ne '{}';
print $reply, "\n";
exit 0;

sub same_environment {
    for (@env_said) {
        my ($name, $value) = /\A([A-Z_]+)(?:=(.*))?\z/s or return 0;
        return 0 if defined $value ? ($ENV{$name} // "\0") ne $value : defined $ENV{$name};
    }
    return 1;
}

# relay.private: a folder of this user's that nobody else can write in (or read).
sub private {
    my @st = stat $_[0] or return 0;
    return -d _ && $st[4] == $< && !($st[2] & 077);
}

sub connect_to {
    my ($sock, $where) = @_;
    my $path = "$where/$SOCKET_NAME";
    return connect $sock, address($path) if length $path <= $MAX_PATH;
    # Too long for sun_path: from inside the folder, by its own name; then back.
    opendir my $here, '.' or return 0;
    chdir $where or return 0;
    my $done = private('.') && connect $sock, address($SOCKET_NAME);
    chdir $here;
    return $done;
}

# struct sockaddr_un: sun_family (an unsigned short on Linux), then the path, NUL-ended.
sub address {
    return pack 'S Z*', $AF_UNIX, $_[0] if $^O eq 'linux';
    return Socket::pack_sockaddr_un($_[0]);
}

# Whether bytes are UTF-8 as Python decodes it (no surrogates, no overlong forms): then the
# header's text is what relay._quote writes of the str Python would have.
sub utf8_text {
    return $_[0] =~ /\A(?:[\x00-\x7F]|[\xC2-\xDF][\x80-\xBF]|\xE0[\xA0-\xBF][\x80-\xBF]
        |[\xE1-\xEC\xEE\xEF][\x80-\xBF]{2}|\xED[\x80-\x9F][\x80-\xBF]
        |\xF0[\x90-\xBF][\x80-\xBF]{2}|[\xF1-\xF3][\x80-\xBF]{3}|\xF4[\x80-\x8F][\x80-\xBF]{2})*\z/x;
}

# relay._quote
sub quote {
    my $text = shift;
    $text =~ s/(["\\])/\\$1/g;
    $text =~ s/([\x00-\x1F])/sprintf('\\u%04x', ord $1)/ge;
    return qq("$text");
}

# The Python relay decides, fed `$bytes` on stdin; `$outcome` (relay_hook's --relayed=) says
# what happened to the event here. Its exit status is ours.
sub hand_over {
    my ($outcome, $bytes) = @_;
    my @command = @python;
    if (!@command) {
        print "{}\n";  # no Python relay named: not a command install writes
        exit 0;
    }
    push @command, "--relayed=$outcome" if $outcome ne '';
    $SIG{PIPE} = 'IGNORE';
    open my $to, '|-', @command or exit 1;
    binmode $to;
    print {$to} $bytes;
    close $to;
    exit($? & 127 ? 1 : $? >> 8);
}
