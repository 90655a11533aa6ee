<?php
/*
 * Slide 51 of the talk ("Pushing via STOMP"), made runnable.
 *
 *     php producer.php [URL [COUNT]]
 *
 * Saves COUNT users; each save() opens its own connection, as on the slide, and pushes one
 * JSON e-mail to /queue/email. Prints every body it sent, one per line, so a test can compare
 * them with what a consumer printed. URL defaults to $QUEUEIT_STOMP_URL, then tcp://localhost:61613.
 */
declare(strict_types=1);

final class MyUser
{
    public function __construct(private string $email)
    {
    }

    public function getEmail(): string
    {
        return $this->email;
    }
}

final class UserService
{
    public function __construct(private string $url)
    {
    }

    /** Returns the body pushed to the queue. */
    public function save(MyUser $user): string
    {
        // $this->db->save($user);  -- the slide's database; nothing to store here.
        $stomp = new Stomp($this->url);
        $body = json_encode([
            'to' => $user->getEmail(),
            'subject' => 'Welcome',
            'message' => 'Welcome to queueit, ' . $user->getEmail() . ' ✓',
            'headers' => [],
        ], JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES);
        if (!$stomp->send('/queue/email', $body)) {
            throw new RuntimeException('send to /queue/email failed');
        }
        unset($stomp);  // DISCONNECT now rather than at the end of the script
        return $body;
    }
}

$url = $argv[1] ?? (getenv('QUEUEIT_STOMP_URL') ?: 'tcp://localhost:61613');
$count = (int) ($argv[2] ?? 1);

try {
    $service = new UserService($url);
    for ($i = 1; $i <= $count; $i++) {
        echo $service->save(new MyUser("user$i@example.com")), PHP_EOL;
    }
} catch (Throwable $e) {
    fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . PHP_EOL);
    exit(1);
}
