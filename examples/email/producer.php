<?php
/*
 * The talk's producer (slide 51): UserService::save() pushes a JSON e-mail to /queue/email.
 *
 *     php examples/email/producer.php [COUNT [URL]]
 *
 * Needs php-cli with the stomp extension (Debian: php-stomp). URL defaults to
 * $QUEUEIT_STOMP_URL, then tcp://localhost:61613. 'persistent' makes queueit keep the
 * message on disk before it answers.
 */
declare(strict_types=1);

final class UserService
{
    public function __construct(private Stomp $stomp)
    {
    }

    public function save(string $email): void
    {
        // $this->db->save($user);  -- the slide's database
        $body = json_encode([
            'to' => $email,
            'subject' => 'Welcome',
            'message' => "Welcome to queueit, $email",
            'headers' => [],
        ], JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES);
        if (!$this->stomp->send('/queue/email', $body, ['persistent' => 'true', 'receipt' => "save-$email"])) {
            throw new RuntimeException('send to /queue/email failed');
        }
    }
}

$count = (int) ($argv[1] ?? 1);
$url = $argv[2] ?? (getenv('QUEUEIT_STOMP_URL') ?: 'tcp://localhost:61613');
try {
    $service = new UserService(new Stomp($url));
    for ($i = 1; $i <= $count; $i++) {
        $service->save("user$i@example.com");
    }
    echo "saved $count users\n";
} catch (Throwable $e) {
    fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . PHP_EOL);
    exit(1);
}
